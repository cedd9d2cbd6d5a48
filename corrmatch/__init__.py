"""corrmatch: semi-supervised semantic segmentation with CorrMatch (CVPR 2024) and its baselines."""

__version__ = "0.1.0"
