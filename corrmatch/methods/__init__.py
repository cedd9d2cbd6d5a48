"""Training methods as LightningModules over one shared base (DESIGN.md §2, §3, §7)."""

from corrmatch.methods.base import SemiSupervisedMethod, check_compatible, poly_factor
from corrmatch.methods.corrmatch import CorrMatch
from corrmatch.methods.fixmatch import FixMatch
from corrmatch.methods.supervised import SupervisedOnly
from corrmatch.methods.unimatch import UniMatch
from corrmatch.methods.unimatch_v2 import UniMatchV2

__all__ = [
    "CorrMatch",
    "FixMatch",
    "SemiSupervisedMethod",
    "SupervisedOnly",
    "UniMatch",
    "UniMatchV2",
    "check_compatible",
    "poly_factor",
]
