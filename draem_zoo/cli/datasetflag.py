"""``--dataset``: which layout ``--data`` holds, for every command that reads a dataset."""

from __future__ import annotations

import argparse

from ..config import DATASET_CHOICES

HELP = ("layout of --data: auto (default: detected from its files), mvtec (MVTec AD, and your own data in its layout), "
        "visa (split_csv/1cls.csv), mvtec_ad2 (train/validation/test_public), dagm (Class<k>/Train, Test)")


def add_dataset_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASET_CHOICES, default="auto", help=HELP)
