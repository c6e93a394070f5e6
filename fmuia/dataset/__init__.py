"""Data roots in the official layout: schema reader, image decoding, synthetic data."""

from fmuia.dataset.schema import DataRoot, Sample, load_root, prediction_mask_relpath, validate_labels

__all__ = ["DataRoot", "Sample", "load_root", "prediction_mask_relpath", "validate_labels"]
