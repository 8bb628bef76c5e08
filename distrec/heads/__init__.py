"""Heads on the shared towers (`model.heads`): retrieval, ctr, rating, preference; importing
the package registers the built-ins (distrec.heads.base has the registry)."""

from distrec.heads import ctr, preference, rating, retrieval  # noqa: F401  (registers them)
from distrec.heads.base import HEADS, Head, HeldOut, LossContext, NegativeSampling

__all__ = ["HEADS", "Head", "HeldOut", "LossContext", "NegativeSampling"]
