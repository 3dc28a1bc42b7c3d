"""Fixtures shared by every stage's tests. Images are made by the tests, never shipped."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from models.synthetic import write_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labeled folder: ``train/`` and ``val/`` with ``female``/``male`` JPEGs and CSVs."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, n_per_class=24, size=(64, 64), seed=7)
    return root
