"""Datasets as distributed (MVTec AD, MVTec AD 2, VisA, DAGM 2007; users' data in the MVTec AD layout):
every file checked, then decoded once to uint8 tensors.

Hands the next stages a :class:`~.category.CategoryData` (train / validation / test images at the
training size, test masks and labels) and the demo dataset generator (:mod:`.demo`)."""

from .category import CategoryData, CategoryFiles, DataConfig
from .datasets import DATASETS, describe, detect, list_categories, resolve, scan_category, select_categories
from .loading import load_category

__all__ = ["DATASETS", "CategoryData", "CategoryFiles", "DataConfig", "describe", "detect", "list_categories",
           "load_category", "resolve", "scan_category", "select_categories"]
