"""Shared fixtures: the real-data root (tests skip without it) and small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DENSE_READOUT_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``../shared/data`` (or $DENSE_READOUT_DATA); skips the test when absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real data not found at {DATA_ROOT}")
    return DATA_ROOT


@pytest.fixture(scope="session")
def embedded():
    """The embedded pretrained EfficientNet-Lite0 (loaded once per session)."""
    from dense_readout import load_pretrained

    return load_pretrained()
