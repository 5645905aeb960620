"""Shared fixtures.

Research data lives in ``../shared/datasets`` beside the checkout (never in
the repository).  Tests that need it use the fixtures below and are skipped,
with the reason, where it is absent.  Override the location with
``AUDIT_SHARED_DATASETS``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("AUDIT_SHARED_DATASETS",
                                      REPO_ROOT.parent / "shared" / "datasets"))


def _shared(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"research dataset {name!r} not found at {path} "
                    "(set AUDIT_SHARED_DATASETS to its parent folder to run this test)")
    return path


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """../shared/datasets/utkface, or skip."""
    return _shared("utkface")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """../shared/datasets/lfw, or skip."""
    return _shared("lfw")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face that scikit-image ships (Eileen Collins, 512x512 RGB)."""
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def pytest_terminal_summary(terminalreporter) -> None:
    """The bad-input corpus's summary line (tests/test_corpus.py), where it ran."""
    harness = sys.modules.get("tests.corpus.harness")
    if harness is not None and harness.TALLY.runs:
        terminalreporter.write_line(harness.TALLY.summary())
