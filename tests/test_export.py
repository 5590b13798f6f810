"""Export store: exported maps equal the readout, geometry, skips, resume after SIGKILL, 2 ranks.

Oracles: the readout of the same preprocessed batch (bitwise, float32; float16 = its
rounding), an image whose one bright square lands in a known cell (mapped back onto
the original pixels), a store killed mid-run and resumed = an uninterrupted one
(every file byte for byte), a 2-process store = a 1-process one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dense_readout import DenseReadout, load_image
from dense_readout.errors import InputError
from dense_readout.export import (
    ClassSelection,
    ExportConfig,
    export_dataset,
    geometry_record,
    open_source,
    open_store,
    readout_maps,
)
from dense_readout.preprocessing import Preprocess

PREP = Preprocess(resize=64, crop=64)


def make_readout(seed: int = 0, classes: int = 6) -> DenseReadout:
    torch.manual_seed(seed)
    return DenseReadout(timm.create_model("test_resnet", num_classes=classes).eval())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nine small random images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for k in range(9):
        size = (70 + 9 * k, 64 + 5 * (k % 3))
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{k}.png")
    return root


def test_exported_scores_equal_the_readout_of_the_same_batch(folder, tmp_path):
    readout = make_readout()
    source = open_source(folder)
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        config = ExportConfig(dtype=dtype, batch_size=4, progress=False)
        export_dataset(source, out, readout, PREP, config)
        store = open_store(out)
        assert len(store) == 9 and store.complete and store.paths == source.paths
        for start in range(0, 9, 4):  # the export's batches
            batch = [PREP(load_image(p)) for p in source.paths[start : start + 4]]
            with torch.inference_mode():
                expected = readout(torch.stack(batch))
            for row, index in enumerate(range(start, start + len(batch))):
                scores = expected.scores[row].numpy()
                want = scores if dtype == "float32" else scores.astype(np.float16)
                np.testing.assert_array_equal(store.scores(index), want)
                np.testing.assert_array_equal(store.logits(index), expected.logits[row].numpy())
                assert store.status(index) == "ok"


def test_geometry_maps_a_cell_back_onto_the_bright_square(tmp_path):
    # 320×256 photo, shorter side → 224, crop 224: resized 280×224, left 28; 7×7 cells of 32 px
    prep = Preprocess(resize=224, crop=224)
    record = geometry_record(prep, (320, 256))
    row, col = 2, 5
    from dense_readout.export import cell_box

    x0, y0, x1, y1 = cell_box(record, (7, 7), row, col)
    pixels = np.zeros((256, 320, 3), np.uint8)
    pixels[round(y0) : round(y1), round(x0) : round(x1)] = 255  # the cell's original pixels
    image = Image.fromarray(pixels)
    # independent check through the preprocessing itself: the square is the cell in the crop
    seen = np.asarray(prep.geometry(image).convert("L"), np.float32) > 127
    ys, xs = np.nonzero(seen)
    assert (ys.min() // 32, ys.max() // 32, xs.min() // 32, xs.max() // 32) == (row, row, col, col)
    assert seen[row * 32 + 1 : row * 32 + 31, col * 32 + 1 : col * 32 + 31].all()
    # through the store: geometry recorded per image, one-hot cell map back on the original
    root = tmp_path / "one"
    root.mkdir()
    image.save(root / "square.png")
    readout = DenseReadout(timm.create_model("test_resnet", num_classes=3).eval())
    export_dataset(
        open_source(root), tmp_path / "store", readout, prep, ExportConfig(progress=False)
    )
    store = open_store(tmp_path / "store")
    assert store.grid == (7, 7) and store.geometry(0).tolist() == record.tolist()
    one_hot = np.zeros((1, 7, 7), np.float32)
    one_hot[0, row, col] = 1
    back = store.upsample(0, one_hot, mode="nearest")[0]
    square = pixels[..., 0] > 0
    assert np.isnan(back[:, :32]).all() and np.isnan(back[:, 288:]).all()  # outside the crop
    disagree = (np.nan_to_num(back) > 0.5) != square
    assert disagree.sum() <= 2 * (square.shape[0] + square.shape[1])  # at most a 1-px rim


def test_corrupt_image_is_skipped_and_counted(folder, tmp_path):
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "img3.png").write_bytes((folder / "img3.png").read_bytes()[:200])  # truncated
    summary = export_dataset(
        open_source(folder),
        tmp_path / "store",
        make_readout(),
        PREP,
        ExportConfig(batch_size=4, progress=False),
    )
    assert summary["counts"] == {
        "images": 10,
        "exported": 8,
        "unreadable": 2,
        "error": 0,
        "pending": 0,
    }
    store = open_store(tmp_path / "store")
    bad = [i for i in range(len(store)) if store.status(i) != "ok"]
    assert [Path(store.paths[i]).name for i in bad] == ["broken.jpg", "img3.png"]
    assert all(np.isnan(store.scores(i)).all() and np.isnan(store.logits(i)).all() for i in bad)
    ok = [i for i in range(len(store)) if i not in bad]
    assert all(np.isfinite(store.scores(i)).all() for i in ok) and len(ok) == 8


def test_class_selection_keeps_the_same_maps(folder, tmp_path):
    readout = make_readout()
    source = open_source(folder)
    source.labels = [(k % 6, (k + 2) % 6) if k % 2 else (k % 6,) for k in range(9)]
    stores = {}
    for spec in ("all", "topk:2", "gt", "4,1"):
        out = tmp_path / spec.replace(":", "_").replace(",", "_")
        config = ExportConfig(classes=spec, dtype="float32", batch_size=4, progress=False)
        export_dataset(source, out, readout, PREP, config)
        stores[spec] = open_store(out)
    full = stores["all"]
    for index in range(9):
        every = full.scores(index)
        top = np.argsort(-full.logits(index), kind="stable")[:2]
        assert sorted(stores["topk:2"].classes(index).tolist()) == sorted(top.tolist())
        assert stores["gt"].labels(index) == source.labels[index]
        for spec in ("topk:2", "gt", "4,1"):
            classes = stores[spec].classes(index)
            maps = stores[spec].scores(index)
            for position, k in enumerate(classes):
                if k < 0:
                    assert np.isnan(maps[position]).all()  # gt padding
                else:
                    np.testing.assert_array_equal(maps[position], every[k])


def test_multiscale_and_flip_sum_the_aligned_maps():
    readout = make_readout()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        plain = readout(x)
        scores, logits, _ = readout_maps(readout, x, (1.0,), flip=False)
        assert torch.equal(scores, plain.scores) and torch.equal(logits, plain.logits)
        summed, _, _ = readout_maps(readout, x, (1.0, 0.5), flip=True)
        half = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear")
        grid = plain.grid_size

        def aligned(z):
            return torch.nn.functional.interpolate(z, size=grid, mode="bilinear")

        expected = (
            plain.scores
            + readout(x.flip(-1)).scores.flip(-1)
            + aligned(readout(half).scores)
            + aligned(readout(half.flip(-1)).scores.flip(-1))
        )
    torch.testing.assert_close(summed, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_store_is_readable_with_zarr(folder, tmp_path):
    zarr = pytest.importorskip("zarr")
    (folder / "broken.jpg").write_bytes(b"nope")
    config = ExportConfig(classes="topk:3", batch_size=4, progress=False)
    export_dataset(open_source(folder), tmp_path / "store", make_readout(), PREP, config)
    store = open_store(tmp_path / "store")
    group = zarr.open_group(str(tmp_path / "store"), mode="r")
    assert group["scores"].shape == (10, 3, 2, 2) and group.attrs["complete"] is True
    for index in range(len(store)):
        np.testing.assert_array_equal(group["scores"][index], store.scores(index))
        np.testing.assert_array_equal(group["logits"][index], store.logits(index))
        np.testing.assert_array_equal(group["classes"][index], store.classes(index))
        np.testing.assert_array_equal(group["geometry"][index], store.geometry(index))
        assert np.asarray(group["paths"][index]).item().decode() == store.paths[index]


def test_resume_refuses_other_settings(folder, tmp_path):
    source = open_source(folder)
    config = ExportConfig(batch_size=4, progress=False)
    export_dataset(source, tmp_path / "store", make_readout(), PREP, config)
    again = export_dataset(source, tmp_path / "store", make_readout(), PREP, config)
    assert again["timing"]["images"] == 0 and again["complete"]  # nothing left to do
    with pytest.raises(InputError, match="dtype differ"):
        export_dataset(
            source,
            tmp_path / "store",
            make_readout(),
            PREP,
            ExportConfig(batch_size=4, dtype="float32", progress=False),
        )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds other files"):
        export_dataset(source, tmp_path / "other", make_readout(), PREP, config)
    with pytest.raises(InputError, match="topk:N"):
        ClassSelection.parse("first:3")


# -- separate processes ------------------------------------------------------------------------

CLI_MODEL = ["--model", "test_resnet", "--random-weights", "--seed", "3", "--input-size", "64"]

SLOW_EXPORT = """
import sys, time
import dense_readout.export.writer as writer
from dense_readout.cli import main
original = writer.readout_maps
def slow(*args, **kwargs):
    time.sleep(0.4)  # a batch takes long enough to be killed in the middle of the run
    return original(*args, **kwargs)
writer.readout_maps = slow
sys.exit(main(sys.argv[1:]))
"""


def _cli(*args: str) -> list[str]:
    return ["export", *args, *CLI_MODEL, "--no-progress", "--workers", "0"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _threads() -> str:
    return os.environ.get("OMP_NUM_THREADS", "1")


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": _threads()}


def _in_process(*args: str) -> None:
    """The CLI in this process at the subprocesses' thread count (same kernels, same bits)."""
    from dense_readout.cli import main

    before = torch.get_num_threads()
    torch.set_num_threads(int(_threads()))
    try:
        assert main(list(args)) == 0
    finally:
        torch.set_num_threads(before)


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_store(folder, tmp_path):
    script = tmp_path / "slow_export.py"
    script.write_text(SLOW_EXPORT)
    args = _cli(str(folder), "--out", str(tmp_path / "killed"), "--batch-size", "2")
    process = subprocess.Popen([sys.executable, str(script), *args], env=_environment())
    status = tmp_path / "killed" / "status"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(status.glob("[0-9]*"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    done = len(list(status.glob("[0-9]*")))
    assert 2 <= done < 5, f"{done} of 5 batches were done at the kill"
    assert not open_store(tmp_path / "killed").complete
    for out in ("killed", "uninterrupted"):  # resume; and a run that was never killed
        _in_process(*_cli(str(folder), "--out", str(tmp_path / out), "--batch-size", "2"))
    resumed, fresh = _files(tmp_path / "killed"), _files(tmp_path / "uninterrupted")
    assert sorted(resumed) == sorted(fresh)
    assert [name for name in fresh if resumed[name] != fresh[name]] == []


@pytest.mark.distributed
def test_two_processes_write_the_same_store(folder, tmp_path):
    (folder / "broken.jpg").write_bytes(b"nope")
    one = tmp_path / "one"
    # the 1-process store from a fresh process too: same environment, same kernels (in
    # pytest's process at OMP_NUM_THREADS=4 one logits chunk differed in its last bits)
    single = [sys.executable, "-m", "dense_readout.cli"]
    single += _cli(str(folder), "--out", str(one), "--batch-size", "3")
    done = subprocess.run(single, capture_output=True, text=True, env=_environment(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_port", str(29600 + os.getpid() % 1000), "-m", "dense_readout.cli"]
    two = tmp_path / "two"
    launcher += _cli(str(folder), "--out", str(two), "--batch-size", "3")
    done = subprocess.run(launcher, capture_output=True, text=True, env=_environment(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("images exported") == 1  # rank 0 reports
    first, second = _files(one), _files(two)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
    assert open_store(two).attrs["counts"]["unreadable"] == 1
