"""Pseudo-labelling of CorrMatch (DESIGN.md §2 steps 7–9): the dynamic threshold and region propagation.

Pure tensor functions, independent of Lightning. :mod:`corrmatch.pseudo.reference` holds a slow,
loop-by-loop transcription of region propagation used to test and time the fast one.
"""

from corrmatch.pseudo.region import region_propagation
from corrmatch.pseudo.threshold import DynamicThreshold

__all__ = ["DynamicThreshold", "region_propagation"]
