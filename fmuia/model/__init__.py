"""The MH-MTL network: a timm encoder, an FPN decoder and one head per task (class per kind)."""

from fmuia.model.heads import HEADS
from fmuia.model.net import MultiTaskNet, build_model

__all__ = ["HEADS", "MultiTaskNet", "build_model"]
