"""Constants shared by the data pipeline, the losses and the evaluation (DESIGN.md §4)."""

IGNORE_INDEX = 255  # mask value of pixels that count in no loss and no metric
UNLABELED_PAD = 254  # mask fill of an unlabeled crop's padding, turned into IGNORE_INDEX in ``ignore``
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
