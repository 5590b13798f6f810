"""Synthetic single-label multi-object scenes (paper A.2) and their training loop."""

from __future__ import annotations

import hashlib
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from dense_readout.errors import CheckpointError, DatasetError, InputError
from dense_readout.experiments.synthetic import (
    NUM_CLASSES,
    SceneConfig,
    SceneGenerator,
    class_name,
    contact_sheet,
    expected_top1,
    read_scene,
    render_symbol,
    write_scenes,
)
from dense_readout.experiments.synthetic_train import (
    SyntheticMetrics,
    cell_presence,
    get_recipe,
    load_checkpoint,
    lr_at,
    train,
)

SCENES = 40


@pytest.fixture(scope="module")
def scenes():
    generator = SceneGenerator(seed=0, split="val")
    return [generator(i) for i in range(SCENES)]


# -- generator vs its records -------------------------------------------------------------


def test_counts_and_classes_agree_with_records(scenes):
    config = SceneConfig()
    for scene in scenes:
        record = scene.record
        objects = record["objects"]
        assert config.min_objects <= len(objects) == record["num_objects"] <= config.max_objects
        classes = [o["class"] for o in objects]
        assert len(set(classes)) == len(classes), "classes are drawn without replacement"
        assert sorted(classes) == record["classes"]
        assert record["visible_classes"] == sorted(o["class"] for o in objects if o["visible"])
        assert record["target"] in record["visible_classes"]
        # the masks hold exactly the visible instances and their classes
        ids = set(np.unique(scene.instance).tolist()) - {0}
        assert ids == {o["instance_id"] for o in objects if o["visible_area"] > 0}
        for obj in objects:
            pixels = scene.instance == obj["instance_id"]
            assert int(pixels.sum()) == obj["visible_area"]
            assert np.all(scene.semantic[pixels] == obj["class"] + 1)
        assert np.array_equal(scene.semantic > 0, scene.instance > 0)
        present = set(np.unique(scene.semantic).tolist()) - {0}
        assert present == {o["class"] + 1 for o in objects if o["visible_area"] > 0}


def test_bboxes_and_scales_agree_with_masks(scenes):
    config = SceneConfig()
    unoccluded = 0
    for scene in scenes:
        for obj in scene.record["objects"]:
            assert config.min_scale <= obj["scale"] <= config.max_scale
            assert -config.max_rotation <= obj["rotation"] <= config.max_rotation
            ys, xs = np.nonzero(scene.instance == obj["instance_id"])
            if ys.size == 0:
                continue
            assert obj["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            # every pixel lies inside the circumscribed circle of diameter `scale`
            cx, cy = obj["center"]
            distance = np.hypot(xs - cx, ys - cy)  # PIL samples pixel (x, y) at (x, y)
            assert (
                distance.max() <= obj["scale"] / 2 + 1.5
            )  # rasterisation: vertices rounded, edges inclusive
            if obj["visible_area"] == obj["area"]:
                # an unoccluded shape reaches its circumradius (all outlines touch the unit circle)
                unoccluded += 1
                assert distance.max() >= obj["scale"] / 2 - 1.5
    assert unoccluded > SCENES  # the check above ran on many objects


def test_object_colours_and_background_agree_with_records(scenes):
    for scene in scenes:
        background = scene.image[scene.semantic == 0]
        assert np.all(background == np.array(scene.record["background"], dtype=np.uint8))
        low, high = SceneConfig().background_range
        assert all(low <= c <= high for c in scene.record["background"])
        for obj in scene.record["objects"]:
            pixels = scene.image[scene.instance == obj["instance_id"]]
            if len(pixels) == 0:
                continue
            colours, counts = np.unique(pixels, axis=0, return_counts=True)
            body = colours[counts.argmax()]  # the pattern covers the smaller part
            assert body.tolist() == obj["color"]
            assert len(colours) <= 2  # body + pattern colour, no anti-aliasing


def test_number_of_objects_and_classes_are_spread():
    generator = SceneGenerator(seed=3, split="train")
    records = [generator(i).record for i in range(150)]
    counts = [r["num_objects"] for r in records]
    assert set(counts) == {3, 4, 5}
    assert max(counts.count(n) for n in (3, 4, 5)) < 2 * min(counts.count(n) for n in (3, 4, 5))
    assert {c for r in records for c in r["classes"]} == set(range(NUM_CLASSES))
    assert len({r["target"] for r in records}) == NUM_CLASSES


def test_same_seed_gives_identical_bytes_other_seed_differs():
    first, again = SceneGenerator(seed=11)(5), SceneGenerator(seed=11)(5)
    for name in ("image", "semantic", "instance"):
        assert getattr(first, name).tobytes() == getattr(again, name).tobytes()
    assert json.dumps(first.record) == json.dumps(again.record)
    assert SceneGenerator(seed=12)(5).image.tobytes() != first.image.tobytes()
    assert SceneGenerator(seed=11, split="val")(5).image.tobytes() != first.image.tobytes()
    # random access: scene 5 does not depend on having generated 0..4
    generator = SceneGenerator(seed=11)
    _ = [generator(i) for i in range(5)]
    assert generator(5).image.tobytes() == first.image.tobytes()


def test_expected_top1_is_mean_of_reciprocals_and_matches_random_visible_guess():
    exact = sum(Fraction(1, n) for n in (3, 4, 5)) / 3
    assert expected_top1(3, 5) == pytest.approx(float(exact))
    assert 100 * expected_top1() == pytest.approx(26.11, abs=0.01)
    # independent check on generated data: guessing a visible class uniformly
    generator = SceneGenerator(seed=1, split="test")
    rng = np.random.default_rng(0)
    hits = []
    for i in range(600):
        record = generator(i).record
        hits.append(rng.choice(record["visible_classes"]) == record["target"])
    assert np.mean(hits) == pytest.approx(expected_top1(), abs=0.05)
    with pytest.raises(InputError):
        expected_top1(4, 2)


def test_write_and_read_round_trip(tmp_path):
    folder = write_scenes(tmp_path, count=3, seed=4, split="test")
    manifest = json.loads((folder / "manifest.json").read_text())
    generator = SceneGenerator(seed=4, split="test")
    for i in range(3):
        stored, fresh = read_scene(folder, i), generator(i)
        assert np.array_equal(stored.image, fresh.image)
        assert np.array_equal(stored.semantic, fresh.semantic)
        assert np.array_equal(stored.instance, fresh.instance)
        assert stored.record == json.loads(json.dumps(fresh.record))
        assert manifest["sha256"][f"{i:06d}"] == hashlib.sha256(fresh.image.tobytes()).hexdigest()
    with pytest.raises(DatasetError, match="missing"):
        read_scene(folder, 7)


def test_contact_sheet_shows_twenty_distinct_classes(tmp_path):
    tiles = [render_symbol(k, 48) for k in range(NUM_CLASSES)]
    assert len({t.tobytes() for t in tiles}) == NUM_CLASSES
    # classes k and k+10 share the outline: same union of body and pattern pixels
    for k in range(10):
        background = np.array([235, 235, 235], dtype=np.uint8)
        assert np.array_equal(
            (tiles[k] != background).any(-1), (tiles[k + 10] != background).any(-1)
        )
    sheet = contact_sheet(tmp_path / "sheet.png", tile=48)
    assert (tmp_path / "sheet.png").is_file() and sheet.size == (480, 2 * (48 + 16))
    assert class_name(13) == "pentagon+cross"


def test_bad_arguments_raise_package_errors():
    with pytest.raises(InputError, match="split"):
        SceneGenerator(split="training")
    with pytest.raises(InputError, match="seed"):
        SceneGenerator(seed=-1)
    with pytest.raises(InputError, match="index"):
        SceneGenerator()(-3)
    with pytest.raises(InputError, match="objects"):
        SceneConfig(min_objects=4, max_objects=2)
    with pytest.raises(InputError, match="class index"):
        class_name(20)
    with pytest.raises(InputError, match="Unknown recipe"):
        get_recipe("gpu-resnet50")
    with pytest.raises(InputError, match="Unknown recipe fields"):
        get_recipe("cpu-resnet18", epoch=3)


# -- grid projection and the Loc. metric ------------------------------------------------------


def test_cell_presence_matches_brute_force_any_pixel_occupancy():
    rng = np.random.default_rng(0)
    semantic = rng.integers(0, 4, size=(23, 31)).astype(np.uint8) * (rng.random((23, 31)) < 0.1)
    grid = (5, 7)
    presence = cell_presence(semantic.astype(np.uint8), grid, num_classes=3)
    for i in range(grid[0]):
        rows = range(math.floor(i * 23 / 5), math.ceil((i + 1) * 23 / 5))
        for j in range(grid[1]):
            cols = range(math.floor(j * 31 / 7), math.ceil((j + 1) * 31 / 7))
            labels = {int(semantic[r, c]) for r in rows for c in cols} - {0}
            assert {k + 1 for k in np.nonzero(presence[:, i, j])[0]} == labels
    # and the benchmark protocol's any-pixel occupancy, class by class
    from dense_readout.evaluation.protocol import grid_occupancy

    for k in range(3):
        expected = grid_occupancy(torch.from_numpy(semantic == k + 1)[None], grid)[0].numpy()
        assert np.array_equal(presence[k], expected)


def test_loc_counts_any_class_present_in_the_cell():
    torch.manual_seed(0)
    batch, k, h, w = 6, 5, 4, 4
    presence = torch.rand(batch, k, h, w) < 0.3
    labels = torch.randint(0, k, (batch, h, w))
    logits = torch.randn(batch, k)
    targets = torch.randint(0, k, (batch,))
    metrics = SyntheticMetrics()
    metrics.update(logits, labels, targets, presence)
    # second computation with plain loops
    hits = cells = 0
    per_image = []
    for b in range(batch):
        image_hits = image_cells = 0
        for i in range(h):
            for j in range(w):
                if presence[b, :, i, j].any():
                    image_cells += 1
                    image_hits += bool(presence[b, labels[b, i, j], i, j])
        hits, cells = hits + image_hits, cells + image_cells
        if image_cells:
            per_image.append(image_hits / image_cells)
    summary = metrics.summary()
    # the names of the ILSVRC suite: loc is averaged per image, loc_cell_pooled pools all cells
    assert summary["loc_cell_pooled"] == pytest.approx(100 * hits / cells)
    assert summary["loc"] == pytest.approx(100 * np.mean(per_image))
    assert "loc_per_image" not in summary
    assert summary["top1"] == pytest.approx(
        100 * float((logits.argmax(1) == targets).float().mean())
    )
    # a readout naming a present class in every FG cell is perfect
    perfect = SyntheticMetrics()
    perfect.update(logits, presence.float().argmax(1), targets, presence)
    assert perfect.summary()["loc"] == perfect.summary()["loc_cell_pooled"] == 100.0


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    recipe = get_recipe("cpu-resnet18", epochs=4, warmup_epochs=1.0, lr=0.1, min_lr=0.001)
    steps = 10
    values = [lr_at(recipe, s, steps) for s in range(4 * steps)]
    assert values[0] == pytest.approx(0.01) and values[steps - 1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[steps:], values[steps + 1 :], strict=False))
    assert lr_at(recipe, 4 * steps, steps) == pytest.approx(0.001)


# -- training: checkpoints and resume ------------------------------------------------------------


def _tiny(**overrides):
    base = {
        "train_size": 32,
        "val_size": 8,
        "epochs": 2,
        "batch_size": 16,
        "input_size": 32,
        "eval_batch_size": 8,
    }
    base.update(overrides)
    return get_recipe("cpu-resnet18", **base)


def _with_old_loc_keys(path):
    """Rewrite a checkpoint's history with the Loc. key names of older runs."""
    payload = torch.load(path, weights_only=False)
    old = {"loc_cell_pooled": "loc", "loc": "loc_per_image"}
    history = payload["history"]
    history["initial"] = {old.get(k, k): v for k, v in history["initial"].items()}
    history["epochs"] = [
        {("val_" + old[k[4:]] if k[4:] in old else k): v for k, v in entry.items()}
        for entry in history["epochs"]
    ]
    assert "val_loc_per_image" in history["epochs"][0]
    torch.save(payload, path)


def test_resumed_training_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)  # bitwise-reproducible kernels for the comparison
    try:
        recipe = _tiny()
        quiet = {"progress": False, "log": lambda message: None}
        straight = train(recipe, tmp_path / "a", **quiet)
        train(recipe, tmp_path / "b", max_epochs=1, **quiet)
        _with_old_loc_keys(tmp_path / "b" / "last.pt")  # resuming a run of an older version
        resumed = train(recipe, tmp_path / "b", **quiet)
    finally:
        torch.set_num_threads(2)
    assert len(straight["epochs"]) == len(resumed["epochs"]) == 2
    a, _, _ = load_checkpoint(tmp_path / "a" / "last.pt")
    b, _, payload = load_checkpoint(tmp_path / "b" / "last.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=False):
        assert torch.equal(x, y), name
    assert payload["epoch"] == 2 and payload["step"] == 4

    # the same numbers, and the old history was read with the current key names
    def untimed(history):
        epochs = [
            {k: v for k, v in e.items() if not k.endswith("_seconds")} for e in history["epochs"]
        ]
        return {**history, "epochs": epochs}

    assert untimed(straight) == untimed(resumed)
    assert {"val_loc", "val_loc_cell_pooled"} <= set(resumed["epochs"][0])
    assert "val_loc_per_image" not in resumed["epochs"][0]
    # the readout of the trained model is exact (GAP + linear) and its grid is what Loc. used
    from dense_readout import DenseReadout

    result = DenseReadout(b)(torch.randn(2, 3, 32, 32))
    assert result.exact and float(result.residual.max()) < 1e-4
    with pytest.raises(CheckpointError, match="another recipe"):
        train(_tiny(lr=0.5), tmp_path / "b", progress=False, log=lambda message: None)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_cli_generate_sheet_and_bad_recipe(tmp_path, capsys):
    from dense_readout.cli import main

    assert (
        main(["synthetic", "generate", str(tmp_path / "scenes"), "--count", "2", "--split", "test"])
        == 0
    )
    assert (
        read_scene(tmp_path / "scenes" / "test", 1).image.tobytes()
        == SceneGenerator(split="test")(1).image.tobytes()
    )
    assert main(["synthetic", "sheet", str(tmp_path / "sheet.png"), "--tile", "32"]) == 0
    assert (tmp_path / "sheet.png").is_file()
    assert main(["synthetic", "train", "--out", str(tmp_path / "run"), "--set", "epoch=1"]) == 2
    assert "Unknown recipe fields" in capsys.readouterr().err
    assert main(["synthetic", "figures", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize(
    "name, grid, exact",
    [
        ("cpu-resnet18", (6, 6), True),
        ("cpu-vit-s32", (6, 6), True),  # fc_norm=False: LayerNorm per token, affine head
        ("paper-resnet18", (7, 7), True),
        ("paper-vit-s32", (7, 7), False),  # as timm builds it: LayerNorm after the pooling
    ],
)
def test_recipes_build_gap_classifiers_with_the_intended_grid_and_exactness(name, grid, exact):
    from dense_readout import DenseReadout
    from dense_readout.experiments.synthetic_recipes import build_model, grid_size_of

    recipe = get_recipe(name)
    model = build_model(recipe).eval()
    assert grid_size_of(model, recipe.input_size) == grid
    readout = DenseReadout(model)
    assert readout.exact is exact, readout.adapter.exactness_note()
    result = readout(torch.randn(1, 3, recipe.input_size, recipe.input_size))
    assert result.num_classes == NUM_CLASSES and result.exact is exact
    if exact:
        assert float(result.residual.max()) < 1e-4
    else:
        assert "LayerNorm" in result.exactness_note and float(result.residual.max()) > 1e-4
    if recipe.model.startswith("vit"):
        assert not model.has_class_token and model.global_pool == "avg"
        assert isinstance(model.fc_norm, torch.nn.LayerNorm) is not exact
        assert isinstance(model.norm, torch.nn.LayerNorm) is exact  # timm's pre-pool norm


def test_paper_vit_is_what_timm_builds_from_the_paper_description():
    """A.2: vit_small_patch32_224, no class token, average pooling, no dropout/drop-path;
    everything else (fc_norm included) as timm builds it."""
    import timm

    from dense_readout.experiments.synthetic_recipes import build_model

    recipe = get_recipe("paper-vit-s32")
    ours = build_model(recipe)
    timms = timm.create_model(
        "vit_small_patch32_224",
        pretrained=False,
        num_classes=NUM_CLASSES,
        class_token=False,
        global_pool="avg",
        drop_rate=0.0,
        drop_path_rate=0.0,
    )
    assert "fc_norm" not in recipe.model_kwargs
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == [
        (n, type(m).__name__) for n, m in timms.named_modules()
    ]


# -- the recipe registry and where names are importable ------------------------------------


def test_recipes_live_in_the_package_registry():
    from dense_readout.experiments.synthetic_recipes import RECIPES, Recipe, register_recipe
    from dense_readout.registry import Registry, UnknownNameError, registries

    assert isinstance(RECIPES, Registry) and registries()["recipe"] is RECIPES
    assert RECIPES.names() == [
        "cpu-resnet18",
        "cpu-vit-s32",
        "cpu2h-resnet18",
        "cpu2h-resnet18-fixed",
        "paper-resnet18",
        "paper-vit-s32",
    ]
    mine = Recipe(name="test-only", epochs=1)
    assert register_recipe(mine) is mine
    try:
        assert get_recipe("test-only", batch_size=8).batch_size == 8
    finally:
        RECIPES.unregister("test-only")
    assert "test-only" not in RECIPES
    with pytest.raises(UnknownNameError, match="cpu-resnet18"):  # lists the known recipes
        get_recipe("test-only")


def test_split_modules_keep_every_old_import_path():
    from dense_readout.experiments import (
        coco,
        coco_annotations,
        coco_features,
        synthetic,
        synthetic_data,
        synthetic_metrics,
        synthetic_recipes,
        synthetic_symbols,
        synthetic_train,
    )

    old_train_names = [
        "RECIPES", "Recipe", "SceneTensors", "StreamingScenes", "SyntheticDataset",
        "SyntheticMetrics", "build_model", "cell_presence", "evaluate", "get_recipe",
        "grid_size_of", "load_checkpoint", "lr_at", "materialize", "register_recipe", "train",
    ]  # fmt: skip
    assert sorted(synthetic_train.__all__) == sorted(old_train_names)
    loop = {"load_checkpoint", "lr_at", "train"}  # defined in synthetic_train itself
    for name in set(old_train_names) - loop:
        homes = [
            m for m in (synthetic_recipes, synthetic_data, synthetic_metrics) if name in m.__all__
        ]
        assert len(homes) == 1 and getattr(homes[0], name) is getattr(synthetic_train, name)
    assert all(
        getattr(synthetic_train, name).__module__ == synthetic_train.__name__ for name in loop
    )
    for name in synthetic_symbols.__all__:
        if name in synthetic.__all__:
            assert getattr(synthetic, name) is getattr(synthetic_symbols, name)
    assert {"contact_sheet", "render_symbol", "class_name", "NUM_CLASSES"} <= set(synthetic.__all__)
    for module in (coco_annotations, coco_features):
        for name in set(module.__all__) & set(coco.__all__):
            assert getattr(coco, name) is getattr(module, name)
    assert {"CocoInstances", "FeatureCache", "validation_positive"} <= set(coco.__all__)


def test_streaming_and_in_memory_sources_give_the_same_batches():
    from dense_readout.experiments.synthetic_train import (
        StreamingScenes,
        SyntheticDataset,
        materialize,
    )

    dataset = SyntheticDataset(SceneGenerator(seed=2, split="val"), 10, 32, (2, 2))
    memory, stream = materialize(dataset), StreamingScenes(dataset, workers=0)
    for a, b in zip(
        memory.train_batches(4, seed=1, epoch=3),
        stream.train_batches(4, seed=1, epoch=3),
        strict=True,
    ):
        for x, y in zip(a, b, strict=False):
            assert torch.equal(x, y)
    for a, b in zip(memory.eval_batches(4), stream.eval_batches(4), strict=True):
        for x, y in zip(a, b, strict=False):
            assert torch.equal(x, y)
    first = [t.clone() for t, _, _ in memory.train_batches(4, seed=1, epoch=0)]
    other = [t for t, _, _ in memory.train_batches(4, seed=1, epoch=1)]
    assert len(first) == 2 and not all(
        torch.equal(x, y) for x, y in zip(first, other, strict=False)
    )  # reshuffled per epoch


def test_committed_cpu_run_used_the_registered_recipe():
    from dataclasses import asdict
    from pathlib import Path

    results = (
        Path(__file__).resolve().parents[1] / "docs" / "results" / "synthetic_cpu_resnet18.json"
    )
    if not results.is_file():
        pytest.skip("no committed run")
    record = json.loads(results.read_text())
    assert record["recipe"] == asdict(get_recipe("cpu-resnet18")), (
        "recipe changed: rerun benchmarks/synthetic_cpu.py"
    )
    epochs = record["history"]
    assert len(epochs) == record["recipe"]["epochs"] and record["final"] == epochs[-1]
    assert record["expected_top1_percent"] == pytest.approx(100 * expected_top1())
    # the Loc. keys carry their current meaning (loc per image, loc_cell_pooled pooled)
    from dense_readout.experiments.synthetic_metrics import upgrade_metric_keys

    assert upgrade_metric_keys(record["initial"]) == record["initial"]
    assert all(upgrade_metric_keys(entry, "val_") == entry for entry in epochs)
    assert {"val_loc", "val_loc_cell_pooled"} <= set(record["final"])
    assert {"loc", "loc_cell_pooled"} <= set(record["initial"])
