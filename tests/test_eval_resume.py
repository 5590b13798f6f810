"""Resumability and scale-out: SIGKILL mid-run + restart, and 2 gloo processes, equal one clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import test_eval_fixtures as fx
from conftest import free_port, subprocess_env
from dense_readout.cli import main

VOLATILE = ("speed", "resumed_from", "settings", "world_size")


def _args(root: Path, out: Path, model: Path, batch: int = 1) -> list[str]:
    return [
        "bench",
        "ilsvrc",
        "--root",
        str(root),
        "--out",
        str(out),
        "--model",
        "test_resnet",
        "--checkpoint",
        str(model),
        "--batch-size",
        str(batch),
        "--workers",
        "0",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--taus",
        "0,0.3,0.6,0.9",
        "--crop",
        "128",  # 4×4 grid: small and quick
    ]


def _stable(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {k: v for k, v in results.items() if k not in VOLATILE}


def _checkpoint_state(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["state"]
    except Exception:
        return None


def _run_until(cmd: list[str], checkpoint: Path, ready, timeout: float = 120.0) -> bool:
    """Start ``cmd``; SIGKILL it as soon as ``ready(state)`` holds. True if it was killed mid-run."""
    process = subprocess.Popen(
        cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    try:
        while process.poll() is None and time.time() < deadline:
            state = _checkpoint_state(checkpoint) if checkpoint.exists() else None
            if state is not None and ready(state):
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.02)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    root = fx.build_many(base / "data", 6)
    model = fx.save_tiny_model(base / "tiny.pt")
    clean = base / "clean"
    assert main(_args(root, clean, model)) == 0
    return base, root, model, clean


def test_sigkill_twice_then_resume_equals_clean_run(setup):
    base, root, model, clean = setup
    out = base / "killed"
    cmd = [sys.executable, "-m", "dense_readout.cli", *_args(root, out, model)]
    checkpoint = out / "checkpoint" / "rank0-of-1.pt"
    # first kill during the prototype pass, second in the middle of the main pass
    assert _run_until(cmd, checkpoint, lambda s: s["phase"] == "prototypes" and s["done"] >= 1)
    assert _checkpoint_state(checkpoint)["phase"] == "prototypes"
    assert _run_until(cmd, checkpoint, lambda s: s["phase"] == "main" and 2 <= s["done"] < 6)
    interrupted = _checkpoint_state(checkpoint)
    assert interrupted["phase"] == "main" and 2 <= interrupted["done"] < 6
    assert main(_args(root, out, model)) == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["resumed_from"] == {"phase": "main", "done": interrupted["done"]}
    assert _stable(out) == _stable(clean)
    assert resumed["images"]["total"] == 6  # no image counted twice or lost


def test_rerun_of_a_finished_run_changes_nothing(setup):
    _base, root, model, clean = setup
    before = _stable(clean)
    speed = json.loads((clean / "results.json").read_text())["speed"]
    assert main(_args(root, clean, model)) == 0
    assert _stable(clean) == before
    kept = json.loads((clean / "results.json").read_text())[
        "speed"
    ]  # nothing left to time: keep the last
    assert (
        kept["ratio_to_forward_bound"] == speed["ratio_to_forward_bound"]
        and "earlier session" in kept["note"]
    )


@pytest.mark.distributed
def test_two_gloo_processes_equal_one_process(setup):
    base, root, model, clean = setup
    out = base / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "dense_readout.cli",
        *_args(root, out, model),
    ]
    completed = subprocess.run(
        cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoint").glob("*.pt")) == [
        "rank0-of-2.pt",
        "rank1-of-2.pt",
    ]
    shards = [_checkpoint_state(out / "checkpoint" / f"rank{r}-of-2.pt") for r in range(2)]
    assert [int(s["seen"]) for s in shards] == [3, 3]  # disjoint halves of 6 images
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2
    assert _stable(out) == _stable(clean)
