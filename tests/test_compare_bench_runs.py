"""``dense-readout compare`` runs: SIGKILL + resume and 2 gloo processes equal one clean run;
the HTML report in headless Chromium (offline, every view drawn)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import test_eval_fixtures as fx
from browser_support import headless_chromium, requests_made
from conftest import free_port, subprocess_env
from dense_readout.cli import main
from test_compare_bench import bench_args, quality, rows_of

browser = pytest.fixture(scope="module")(headless_chromium)

METHODS = ("--methods", "dense-readout,gradcam,random", "--subset", "4", "--road-limit", "2")


def _markers(out: Path) -> int:
    path = out / "records" / "rank0-of-1.jsonl"
    if not path.is_file():
        return 0
    return path.read_text().count('"done":true')


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare-runs")
    root = fx.build_many(base / "data", 6)
    model = fx.save_tiny_model(base / "tiny.pt")
    out = base / "clean"
    assert main([*bench_args(root, out, model), *METHODS]) == 0
    return base, root, model, out


def test_sigkill_mid_run_then_resume_equals_clean_run(clean):
    base, root, model, reference = clean
    out = base / "killed"
    cmd = [sys.executable, "-m", "dense_readout.cli", *bench_args(root, out, model), *METHODS]
    process = subprocess.Popen(
        cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed = False
    deadline = time.time() + 600
    try:
        while process.poll() is None and time.time() < deadline:
            if _markers(out) >= 1:  # one batch of three recorded: kill in the middle
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert killed, "the run ended before a batch was recorded and it could be killed"
    assert _markers(out) < 3
    assert main([*bench_args(root, out, model), *METHODS]) == 0
    assert _markers(out) == 3
    assert rows_of(out) == rows_of(reference)
    ours = json.loads((out / "results.json").read_text())
    theirs = json.loads((reference / "results.json").read_text())
    assert quality(ours) == quality(theirs)
    assert ours["ci"]["gradcam"]["deletion_auc"] == theirs["ci"]["gradcam"]["deletion_auc"]


@pytest.mark.distributed
def test_two_gloo_processes_equal_one_process(clean):
    base, root, model, reference = clean
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
        *bench_args(root, out, model),
        *METHODS,
    ]
    completed = subprocess.run(
        cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    names = sorted(p.name for p in (out / "records").glob("*.jsonl"))
    assert names == ["rank0-of-2.jsonl", "rank1-of-2.jsonl"]
    assert rows_of(out) == rows_of(reference)
    ours = json.loads((out / "results.json").read_text())
    assert quality(ours) == quality(json.loads((reference / "results.json").read_text()))


def test_report_page_draws_every_view_offline(clean, browser):
    _, _, _, out = clean
    requests_made(browser)  # clear the log
    browser.get((out / "report.html").resolve().as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "true"
    methods = ["dense-readout", "gradcam", "random"]
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#scores tr')].slice(1).map(r => r.cells[0].textContent)"
    )
    assert rows == methods
    for plot in ("scatter", "deletion", "insertion", "cascade"):
        drawn = browser.execute_script(
            f"return [...document.querySelectorAll('#{plot} [data-method]')]"
            ".map(e => e.dataset.method)"
        )
        assert sorted(drawn) == sorted(methods), plot
    images = browser.execute_script("return document.querySelectorAll('#examples img').length")
    canvases = browser.execute_script("return document.querySelectorAll('#examples canvas').length")
    scored = {row["position"] for row in rows_of(out)}
    assert images == len(scored & set(range(6))) > 0  # the first 6 positions that were scored
    assert canvases == len(methods) * images  # one map per method and example image
    assert [url for url in requests_made(browser) if not url.startswith(("file:", "data:"))] == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
