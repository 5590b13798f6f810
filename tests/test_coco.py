"""COCO loader (A.1 filter), single positives, feature cache, linear probe, per-cell metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dense_readout.errors import DatasetError, InputError
from dense_readout.evaluation.protocol import Protocol, grid_occupancy
from dense_readout.experiments.coco import (
    CocoInstances,
    FeatureCache,
    LinearProbe,
    ProbeConfig,
    cross_validate,
    evaluate_probe,
    sample_positive,
    train_probe,
    validation_positive,
)
from dense_readout.preprocessing import Preprocess

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=256, crop=224, interpolation="bilinear")
CROP = 224 * 224


def _square(x0, y0, side):
    return [[x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]]


def _write_coco(root: Path) -> dict:
    """Three 256×256 images (resize is the identity, the crop drops a 16-px border)."""
    from pycocotools import mask as mask_utils

    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in (1, 2, 3):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
            root / "val2017" / name
        )
        images.append({"id": image_id, "file_name": name, "width": 256, "height": 256})
    blob = np.zeros((256, 256), dtype=np.uint8)
    blob[100:140, 30:70] = 1  # 1,600 px, all inside the crop
    blob[0:10, 0:256] = 1  # 2,560 px in the border, cropped away
    rle = mask_utils.encode(np.asfortranarray(blob))
    rle["counts"] = rle["counts"].decode()
    crowd = np.zeros((256, 256), dtype=np.uint8)
    crowd[150:200, 150:200] = 1
    flat = crowd.flatten(order="F")  # uncompressed RLE: run lengths starting with zeros
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    annotations += [
        # image 1: a kept polygon (50×50), a dropped one (15×15 < 1%), a kept RLE blob
        {
            "id": 10,
            "image_id": 1,
            "category_id": 18,
            "segmentation": _square(40, 40, 50),
            "iscrowd": 0,
            "area": 2500,
            "bbox": [40, 40, 50, 50],
        },
        {
            "id": 11,
            "image_id": 1,
            "category_id": 1,
            "segmentation": _square(150, 150, 15),
            "iscrowd": 0,
            "area": 225,
            "bbox": [150, 150, 15, 15],
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 3,
            "segmentation": rle,
            "iscrowd": 0,
            "area": int(blob.sum()),
            "bbox": [0, 0, 256, 140],
        },
        # image 2: a crowd region (uncompressed RLE) and a polygon inside the cropped border
        {
            "id": 20,
            "image_id": 2,
            "category_id": 1,
            "segmentation": {"counts": counts, "size": [256, 256]},
            "iscrowd": 1,
            "area": 2500,
            "bbox": [150, 150, 50, 50],
        },
        {
            "id": 21,
            "image_id": 2,
            "category_id": 18,
            "segmentation": _square(0, 0, 14),
            "iscrowd": 0,
            "area": 196,
            "bbox": [0, 0, 14, 14],
        },
        # image 3: only a tiny instance -> the image is dropped
        {
            "id": 30,
            "image_id": 3,
            "category_id": 3,
            "segmentation": _square(100, 100, 10),
            "iscrowd": 0,
            "area": 100,
            "bbox": [100, 100, 10, 10],
        },
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    payload = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(payload))
    return {"blob": blob, "crowd": crowd}


@pytest.fixture()
def tiny_coco(tmp_path):
    masks = _write_coco(tmp_path / "coco")
    return tmp_path / "coco", masks


def test_filter_keeps_instances_covering_one_percent_of_the_crop(tiny_coco):
    root, masks = tiny_coco
    coco = CocoInstances(root, preprocess=PRE)
    assert coco.class_names == ("person", "car", "dog")  # contiguous labels in category-id order
    assert [image.image_id for image in coco] == [1, 2]  # image 3 has no kept instance
    first, second = coco[0], coco[1]
    kept = {annotation: (label, pixels) for annotation, label, pixels in first.kept}
    assert set(kept) == {10, 12} and first.dropped == 1 and first.labels == (1, 2)
    # RLE blob: exactly its pixels inside the crop (resize is the identity here)
    assert kept[12] == (1, int(masks["blob"][16:240, 16:240].sum())) == (1, 1600)
    assert kept[10][1] >= 0.01 * CROP
    assert [a for a, _, _ in second.kept] == [20] and second.labels == (
        0,
    )  # crowd kept, border dropped
    assert second.kept[0][2] == int(masks["crowd"][16:240, 16:240].sum())
    stats = coco.statistics()
    assert (
        stats["images_kept"] == 2
        and stats["instances_dropped"] == 3
        and stats["multi_label_images"] == 1
    )
    # label masks are the kept instances only, cropped
    label_masks = coco.label_masks(first)
    assert label_masks.shape == (3, 224, 224) and not label_masks[0].any()
    assert torch.equal(label_masks[1], torch.from_numpy(masks["blob"][16:240, 16:240] > 0))
    without_crowd = CocoInstances(root, preprocess=PRE, include_crowd=False)
    assert [image.image_id for image in without_crowd] == [1]
    stricter = CocoInstances(root, preprocess=PRE, min_fraction=0.04)
    # 4% of the crop is 2,007 px: the 50×50 polygon stays, the 1,600-px blob goes
    assert [a for a, _, _ in stricter[0].kept] == [10]


def test_threshold_counts_pixels_after_resize_and_crop(tmp_path):
    """A 640×480 image: shorter side 480 -> 256 (scale 8/15), then the centre crop."""
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", (640, 480)).save(root / "val2017" / "a.jpg")
    # two squares of 45 px (≈ 24 px after resize: 576 px ≥ 1%) and 30 px (16 px: 256 px < 1%)
    annotations = [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 5,
            "segmentation": _square(300, 200, 45),
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 7,
            "category_id": 6,
            "segmentation": _square(200, 200, 30),
            "iscrowd": 0,
        },
        # inside the image but outside the crop (crop spans x in [~76, ~564] of the original)
        {
            "id": 3,
            "image_id": 7,
            "category_id": 6,
            "segmentation": _square(0, 200, 60),
            "iscrowd": 0,
        },
    ]
    payload = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 640, "height": 480}],
        "annotations": annotations,
        "categories": [{"id": 5, "name": "a"}, {"id": 6, "name": "b"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(payload))
    coco = CocoInstances(root, preprocess=PRE)
    (image,) = coco.images
    assert [a for a, _, _ in image.kept] == [1] and image.dropped == 2
    assert (
        abs(image.kept[0][2] - (45 * 256 / 480) ** 2) < 4 * 45 * 256 / 480
    )  # area up to boundary pixels


def test_positives():
    labels = [3, 17, 42]
    assert validation_positive(5, labels) == validation_positive(5, list(reversed(labels)))
    assert validation_positive(5, labels) in labels
    chosen = {validation_positive(i, labels) for i in range(60)}
    assert chosen == set(labels)  # deterministic per image, not constant over images
    generator = torch.Generator().manual_seed(0)
    draws = [sample_positive(labels, generator) for _ in range(3000)]
    for label in labels:
        assert abs(draws.count(label) / 3000 - 1 / 3) < 0.04
    with pytest.raises(InputError):
        sample_positive([], generator)


def test_probe_is_scale_free_and_dropout_only_in_training():
    torch.manual_seed(0)
    probe = LinearProbe(8, 3)
    x = torch.randn(4, 8)
    probe.eval()
    assert torch.allclose(probe(x), probe(5 * x), atol=1e-6)
    expected = probe.fc(x / x.norm(dim=1, keepdim=True))
    assert torch.allclose(probe(x), expected, atol=1e-6)
    probe.train()
    assert not torch.allclose(probe(x), probe(x))


def _toy_data(num=40, classes=4, dim=16, seed=0):
    """Cells are noisy class prototypes; FG cells of an image hold its classes."""
    rng = torch.Generator().manual_seed(seed)
    prototypes = torch.eye(dim)[:classes] * 3
    grid = 0.1 * torch.randn(num, dim, 3, 3, generator=rng)
    labels = torch.zeros(num, classes, dtype=torch.bool)
    presence = torch.zeros(num, classes, 3, 3, dtype=torch.bool)
    target = torch.zeros(num, dtype=torch.long)
    for n in range(num):
        present = torch.randperm(classes, generator=rng)[: 1 + n % 2]
        labels[n, present] = True
        for slot, k in enumerate(present.tolist()):
            cell = (n + 4 * slot) % 9
            grid[n, :, cell // 3, cell % 3] += prototypes[k]
            presence[n, k, cell // 3, cell % 3] = True
        target[n] = int(present[0])
    fg = presence.gather(1, target.view(-1, 1, 1, 1).expand(-1, 1, 3, 3)).squeeze(1)
    return {
        "grid": grid,
        "grid_wo_bg": grid.clone(),
        "grid_wo_fg": grid.clone(),
        "fg": fg,
        "presence": presence,
        "labels": labels,
        "target": target,
        "image_ids": torch.arange(num),
    }


def test_probe_learns_from_single_positives_and_reads_out_per_cell():
    data = _toy_data()
    pooled = data["grid"].mean(dim=(2, 3))
    probe = train_probe(pooled, data["labels"], 4, ProbeConfig(epochs=150, lr=0.05))
    suite, any_class = evaluate_probe(probe, data)
    values = suite.values()
    # second computation of the per-cell readout: the probe on each cell vector
    cells = probe(data["grid"].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    top = cells.argmax(1)
    fg = data["fg"]
    hits = (top == data["target"].view(-1, 1, 1)) & fg
    assert values["loc_cell_pooled"] == pytest.approx(100 * hits.sum().item() / fg.sum().item())
    assert values["fg_det"] == pytest.approx(100 * hits.flatten(1).any(1).float().mean().item())
    bg_hits = ((top == data["target"].view(-1, 1, 1)) & ~fg).flatten(1).any(1)
    assert values["bg_act"] == pytest.approx(100 * bg_hits.float().mean().item())
    logits = probe(data["grid"].mean(dim=(2, 3)))
    assert values["top1"] == pytest.approx(
        100 * (logits.argmax(1) == data["target"]).float().mean().item()
    )
    # learnable toy problem: the prototype cells are read out as their class
    assert values["loc"] > 90 and any_class.summary()["loc_cell_pooled"] > 90
    with pytest.raises(InputError):
        train_probe(pooled, data["labels"][:, :3], 4)


def test_cross_validation_evaluates_every_image_once():
    data = _toy_data(num=30)
    result = cross_validate(data, 4, folds=3, config=ProbeConfig(epochs=100, lr=0.05))
    assert [f["test_images"] for f in result["folds"]] == [10, 10, 10]
    assert result["counts"]["top1"] == {"used": 30, "skipped": 0}
    assert result["metrics"]["loc"] > 80
    with pytest.raises(InputError, match="folds"):
        cross_validate(data, 4, folds=31)


def test_multi_label_loc_keys_map_to_pooled_and_per_image():
    """``loc_any_present_class`` is pooled over cells, ``..._per_image`` averaged per image."""
    from dense_readout.experiments.coco import probe_split

    data = _toy_data(num=12)
    config = ProbeConfig(epochs=30, lr=0.05)
    result = probe_split(data, data, 4, config)
    probe = train_probe(data["grid"].mean(dim=(2, 3)), data["labels"], 4, config)
    extra = evaluate_probe(probe, data)[1].summary()
    assert result["loc_any_present_class"] == pytest.approx(extra["loc_cell_pooled"])
    assert result["loc_any_present_class_per_image"] == pytest.approx(extra["loc"])


def test_feature_cache_computes_once_and_matches_a_direct_readout(tiny_coco, tmp_path):
    import timm

    from dense_readout import DenseReadout, load_image

    root, _ = tiny_coco
    coco = CocoInstances(root, preprocess=PRE)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    protocol = Protocol(PRE)
    cache = FeatureCache(tmp_path / "cache", model, "resnet10t-random", protocol)
    first = cache.load(coco)
    second = cache.load(coco)
    assert first["computed"] and not second["computed"]
    for key in ("grid", "grid_wo_fg", "fg", "presence", "labels", "target"):
        assert torch.equal(first[key], second[key]), key
    # independent recomputation for image 0
    image = coco[0]
    x = PRE(load_image(image.path))[None]
    direct = DenseReadout(model)(x).features[0]
    assert torch.allclose(first["grid"][0], direct, atol=1e-5)
    target = int(first["target"][0])
    assert target == validation_positive(image.image_id, image.labels) and target in image.labels
    mask = coco.label_masks(image)[target]
    assert torch.equal(first["fg"][0], grid_occupancy(mask[None], tuple(direct.shape[-2:]))[0])
    occluded = torch.where(mask, torch.zeros(()), x[0])  # fill 'mean' = 0 after normalisation
    assert torch.allclose(
        first["grid_wo_fg"][0], DenseReadout(model)(occluded[None]).features[0], atol=1e-5
    )
    # a different protocol is a different cache entry
    other = FeatureCache(tmp_path / "cache", model, "resnet10t-random", Protocol(PRE, fill="black"))
    assert other.path(coco) != cache.path(coco)


def test_features_use_the_stored_frame_of_exif_rotated_images(tiny_coco, tmp_path):
    """COCO masks refer to the stored pixels; an EXIF orientation tag must not rotate the input."""
    import timm

    from dense_readout import DenseReadout, load_image

    root, _ = tiny_coco
    coco = CocoInstances(root, preprocess=PRE)
    path = coco[0].path
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    stored = Image.open(path).convert("RGB")
    stored.save(path, exif=exif, quality=95)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    first = FeatureCache(tmp_path / "cache", model, "r10t", Protocol(PRE)).load(coco)
    readout = DenseReadout(model)
    as_stored = readout(PRE(load_image(path, exif_transpose=False))[None]).features[0]
    upright = readout(PRE(load_image(path))[None]).features[0]
    assert torch.allclose(first["grid"][0], as_stored, atol=1e-5)
    assert not torch.allclose(first["grid"][0], upright, atol=1e-3)


def test_bad_inputs_raise_package_errors(tmp_path, tiny_coco):
    with pytest.raises(DatasetError, match="instances_val2017.json"):
        CocoInstances(tmp_path)
    root, _ = tiny_coco
    with pytest.raises(InputError, match="min_fraction"):
        CocoInstances(root, min_fraction=1.5)
    (root / "annotations" / "instances_bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a COCO"):
        CocoInstances(root, split="bad")


def test_real_sample_filter(data_root):
    coco = CocoInstances(data_root / "coco_val2017_sample", preprocess=PRE)
    stats = coco.statistics()
    assert coco.num_classes == 80 and len(coco.coco.getImgIds()) == 79
    assert 0 < stats["images_kept"] <= 79
    assert stats["images_kept"] + sum(stats["images_skipped"].values()) == 79
    for image in coco.images:
        assert image.labels and all(pixels >= 0.01 * CROP for _, _, pixels in image.kept)


def test_cli_reports_a_missing_dataset(tmp_path, capsys):
    from dense_readout.cli import main

    assert main(["coco-probe", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 2
    assert "instances_val2017.json" in capsys.readouterr().err


def test_split_probe_and_pooled_only_cache(tiny_coco, tmp_path):
    import timm

    root, _ = tiny_coco
    coco = CocoInstances(root, preprocess=PRE)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    full = FeatureCache(tmp_path / "c", model, "r10t", Protocol(PRE)).load(coco)
    pooled = FeatureCache(tmp_path / "c", model, "r10t", Protocol(PRE), pooled_only=True).load(coco)
    assert set(pooled) >= {"pooled", "labels"} and "grid" not in pooled
    assert torch.allclose(pooled["pooled"], full["grid"].mean(dim=(2, 3)), atol=1e-5)
    from dense_readout.experiments.coco import probe_split

    result = probe_split(pooled, full, coco.num_classes, ProbeConfig(epochs=5))
    assert result["counts"]["top1"]["used"] == len(coco) and result["train_images"] == len(coco)
    assert result["test_images_with_unseen_class"] == 0
