"""corrmatch: semi-supervised semantic segmentation with CorrMatch (CVPR 2024) and its baselines."""

__version__ = "0.1.0"

from corrmatch.inference import Segmenter  # noqa: E402

__all__ = ["Segmenter", "__version__"]
