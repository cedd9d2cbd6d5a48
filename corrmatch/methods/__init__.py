"""Training methods as LightningModules over one shared base (DESIGN.md §2, §3)."""

from corrmatch.methods.base import SemiSupervisedMethod, check_compatible, poly_factor
from corrmatch.methods.corrmatch import CorrMatch
from corrmatch.methods.fixmatch import FixMatch
from corrmatch.methods.supervised import SupervisedOnly
from corrmatch.methods.unimatch import UniMatch

__all__ = [
    "CorrMatch",
    "FixMatch",
    "SemiSupervisedMethod",
    "SupervisedOnly",
    "UniMatch",
    "check_compatible",
    "poly_factor",
]
