"""``dense-readout synthetic evaluate``: a checkpoint on a fresh test split.

The oracle is a second, independent computation: every test scene is rendered,
downsampled and read out one at a time, and Top-1, Top-1 (visible) and both Loc.
numbers are counted with plain Python loops over the 224-px semantic mask.
"""

from __future__ import annotations

import json
import math
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from dense_readout import DenseReadout
from dense_readout.cli import main
from dense_readout.errors import CheckpointError, InputError
from dense_readout.experiments.synthetic import SceneConfig, SceneGenerator
from dense_readout.experiments.synthetic_evaluate import evaluate_run
from dense_readout.experiments.synthetic_train import get_recipe, load_checkpoint, train

COUNT = 14


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic-run")
    recipe = get_recipe("cpu-resnet18", train_size=64, val_size=8, epochs=1, batch_size=32)
    train(recipe, folder, progress=False, log=lambda s: None)
    return folder


def _window(index: int, size: int, cells: int) -> tuple[int, int]:
    return math.floor(index * size / cells), math.ceil((index + 1) * size / cells)


def _direct_metrics(run, seed: int) -> dict[str, float]:
    """The four metrics scene by scene, from the readout of each image alone."""
    model, recipe, _ = load_checkpoint(run / "best.pt")
    readout = DenseReadout(model)
    generator = SceneGenerator(SceneConfig(), seed, "test")
    top1 = visible = cells = hits = 0
    per_image = []
    for index in range(COUNT):
        scene = generator(index)
        small = Image.fromarray(scene.image).resize((recipe.input_size,) * 2, Image.Resampling.BOX)
        x = torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        result = readout(x)
        predicted = int(result.logits[0].argmax())
        present = {int(v) - 1 for v in np.unique(scene.semantic) if v > 0}
        top1 += predicted == scene.target
        visible += predicted in present
        h, w = result.grid_size
        image_cells = image_hits = 0
        for i in range(h):
            for j in range(w):
                top, bottom = _window(i, scene.semantic.shape[0], h)
                left, right = _window(j, scene.semantic.shape[1], w)
                window = scene.semantic[top:bottom, left:right]
                classes = {int(v) - 1 for v in np.unique(window) if v > 0}
                if classes:
                    image_cells += 1
                    image_hits += int(result.labels()[0, i, j]) in classes
        cells, hits = cells + image_cells, hits + image_hits
        if image_cells:
            per_image.append(image_hits / image_cells)
    return {
        "top1": 100 * top1 / COUNT,
        "top1_visible": 100 * visible / COUNT,
        "loc_cell_pooled": 100 * hits / cells,
        "loc": 100 * sum(per_image) / len(per_image),
    }


def test_cli_evaluate_reproduces_the_metrics_read_directly_from_the_readout(run, capsys, tmp_path):
    figure = tmp_path / "overlay.png"
    code = main(
        [
            "synthetic", "evaluate", str(run), "--count", str(COUNT), "--batch-size", "5",
            "--bootstrap", "200", "--no-progress", "--figure", str(figure),
            "--results", str(tmp_path / "results.json"),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    # --results: the same report plus the command line, which reproduces it
    written = json.loads((tmp_path / "results.json").read_text())
    command = written.pop("provenance")["command"]
    assert written == report
    assert main([*shlex.split(command)[1:], "--fresh", "--no-progress"]) == 0
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["summary"] == report["summary"] and rerun["intervals"] == report["intervals"]
    assert report["split"] == "test" and report["seed"] == 1 and report["count"] == COUNT
    direct = _direct_metrics(run, seed=report["seed"])
    for key, value in direct.items():
        assert report["summary"][key] == pytest.approx(value, abs=1e-9), key
        low, high = report["intervals"][key]
        assert low <= value <= high
    assert (run / f"eval_test_s1_n{COUNT}.json").is_file() and figure.is_file()


def test_interrupted_evaluation_resumes_to_the_same_numbers(run, tmp_path):
    whole = evaluate_run(run, count=COUNT, batch_size=3, out=tmp_path / "a", progress=False)

    def interrupt(done: int) -> None:
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, count=COUNT, batch_size=3, out=tmp_path / "b", on_batch=interrupt)
    partial = tmp_path / "b" / f"eval_test_s1_n{COUNT}.partial.npz"
    with np.load(partial) as saved:
        assert len(saved["top1"]) == 6  # nothing finished was lost
    seen = []
    resumed = evaluate_run(
        run, count=COUNT, batch_size=3, out=tmp_path / "b", progress=False, on_batch=seen.append
    )
    assert seen[0] == 9  # continued after the 6 saved scenes
    assert resumed.summary == whole.summary and resumed.intervals == whole.intervals
    assert not partial.exists()


def test_bad_input_is_named(run, tmp_path):
    with pytest.raises(InputError, match="count and batch_size"):
        evaluate_run(run, count=0, progress=False)
    with pytest.raises(InputError, match="split must be one of"):
        evaluate_run(run, split="holdout", count=2, progress=False)
    with pytest.raises(CheckpointError, match="synthetic train"):
        evaluate_run(tmp_path, count=2, progress=False)
    assert main(["synthetic", "evaluate", str(tmp_path), "--count", "2", "--no-progress"]) == 2
