"""Shared fixtures: the real-data root (tests skip without it) and small models."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DENSE_READOUT_DATA", REPO.parent / "shared" / "data"))

# At most two intra-op threads by default (CI machines have two cores); an explicit
# OMP_NUM_THREADS is respected, so the suite can be run at other thread counts on purpose
# (CI reruns the numerics-marked tests at 1 and 4 threads: results must not depend on it).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

#: test modules whose oracles compare floating-point results of different computations
#: (batch sizes, processes, kernels, sort orders): CI reruns them at 1 and 4 threads.
NUMERICS_MODULES = {
    "test_oracles",
    "test_readout",
    "test_captum",
    "test_gradcam",
    "test_quantus",
    "test_lrp",
    "test_lrp_torchvision",
    "test_lrp_transformers",
    "test_patch_index",
    "test_attacks",
    "test_localization",
    "test_eval_metrics",
    "test_compare_bench",
    "test_export",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in NUMERICS_MODULES:
            item.add_marker(pytest.mark.numerics)


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


def subprocess_env() -> dict:
    """Environment for a CLI subprocess: one thread, unbuffered, this checkout's ``src``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def free_port() -> int:
    """A free TCP port on the loopback interface (for torch.distributed.run's master)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
