"""A tiny demo category (weave, 32 px: 10 train, 3 good and 2 of each defect in test), made once per module."""

from __future__ import annotations

import pytest

from draem_zoo.data.demo import make_demo_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data"), categories=("weave",), size=32, n_train=10,
                             n_test_good=3, n_test_defect=2)
