"""Datasets in the MVTec AD layout: every file checked, then decoded once to uint8 tensors.

Hands the next stages a :class:`~.mvtec.CategoryData` (train / validation / test images at the
training size, test masks and labels) and the demo dataset generator (:mod:`.demo`)."""

from .mvtec import CategoryData, CategoryFiles, DataConfig, describe, list_categories, load_category, scan_category

__all__ = ["CategoryData", "CategoryFiles", "DataConfig", "describe", "list_categories", "load_category",
           "scan_category"]
