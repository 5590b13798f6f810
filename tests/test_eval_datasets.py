"""ILSVRC loaders: the three box layouts agree on one fixture; bad inputs fail per item or loudly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import test_eval_fixtures as fx
from dense_readout.errors import DatasetError, ImageLoadError
from dense_readout.evaluation._imagenet_a_wnids import IMAGENET_A_WNIDS
from dense_readout.evaluation.datasets import ILSVRCBoxes, ImageNetA, detect_layout, fit_boxes
from dense_readout.imagenet import imagenet_wnids


def _records(dataset):
    return [
        (s.path.name, s.label, s.boxes.tolist(), s.real, s.image_size)
        for s in (dataset[i] for i in range(len(dataset)))
    ]


@pytest.fixture()
def all_layouts(tmp_path):
    return fx.build(tmp_path, ("voc", "kaggle", "wsol"))


def test_three_layouts_agree_with_the_fixture(all_layouts):
    datasets = {
        layout: ILSVRCBoxes(all_layouts, layout=layout) for layout in ("voc", "kaggle", "wsol")
    }
    records = {layout: _records(ds) for layout, ds in datasets.items()}
    assert records["voc"] == records["kaggle"] == records["wsol"]
    expected = [
        (fx.image_name(n), label, [list(map(float, b)) for b in boxes], tuple(real), size)
        for n, size, label, boxes, real in fx.ITEMS
    ]
    assert records["voc"] == expected


def test_layout_detection_order(tmp_path):
    fx.build(tmp_path, ("wsol",))
    assert detect_layout(tmp_path) == "wsol"
    fx.write_kaggle(tmp_path)
    assert detect_layout(tmp_path) == "kaggle"
    fx.write_voc(tmp_path)
    assert detect_layout(tmp_path) == "voc"


def test_no_layout_is_a_clear_error(tmp_path):
    fx.write_images(tmp_path)
    with pytest.raises(DatasetError, match="bbox_val"):
        ILSVRCBoxes(tmp_path)


def test_wsol_boxes_scaled_to_a_resized_file(tmp_path):
    fx.build(tmp_path, ("wsol",))
    # item 1 stored at half resolution while the metadata keeps the original frame
    path = tmp_path / "val" / fx.image_name(1)
    Image.open(path).resize((150, 100)).save(path)
    sample = ILSVRCBoxes(tmp_path, layout="wsol")[0]
    assert sample.image_size == (150, 100)
    assert sample.boxes.tolist() == [[5.0, 10.0, 60.0, 75.0]]


def test_real_labels_follow_the_file_number(all_layouts):
    dataset = ILSVRCBoxes(all_layouts)
    assert dataset[1].real == (7, 8) and dataset[2].real == ()
    assert ILSVRCBoxes(all_layouts, real=False)[0].real is None


# -- per-item faults ------------------------------------------------------------------------
def _reason(dataset, index):
    with pytest.raises((DatasetError, ImageLoadError)) as info:
        dataset[index]
    return info.value.reason


def test_missing_and_malformed_xml(tmp_path):
    fx.build(tmp_path, ("voc",))
    (tmp_path / "bbox_val" / "ILSVRC2012_val_00000001.xml").unlink()
    (tmp_path / "bbox_val" / "ILSVRC2012_val_00000002.xml").write_text("<annotation><size>")
    dataset = ILSVRCBoxes(tmp_path)
    assert _reason(dataset, 0) == "missing_annotation"
    assert _reason(dataset, 1) == "malformed_annotation"
    assert dataset[2].label == 1  # the others still load


def test_image_without_box_and_box_outside(tmp_path):
    fx.build(tmp_path, ("voc",))
    (tmp_path / "bbox_val" / "ILSVRC2012_val_00000001.xml").write_text(
        "<annotation><size><width>300</width><height>200</height></size></annotation>"
    )
    (tmp_path / "bbox_val" / "ILSVRC2012_val_00000002.xml").write_text(
        fx.voc_xml(2, (200, 320), 7, [[400, 10, 450, 40]])
    )
    (tmp_path / "bbox_val" / "ILSVRC2012_val_00000003.xml").write_text(
        fx.voc_xml(3, (227, 227), 1, [[-20, -20, 100, 100], [500, 500, 600, 600]])
    )
    dataset = ILSVRCBoxes(tmp_path)
    assert _reason(dataset, 0) == "no_box"
    assert _reason(dataset, 1) == "box_outside_image"
    partly = dataset[2]
    assert partly.boxes.tolist() == [[0.0, 0.0, 100.0, 100.0]] and partly.boxes_clipped == 1


def test_corrupt_jpeg_fails_per_item(tmp_path):
    fx.build(tmp_path, ("voc",))
    path = tmp_path / "val" / fx.image_name(5)
    path.write_bytes(b"not a jpeg at all")
    dataset = ILSVRCBoxes(tmp_path)
    assert _reason(dataset, 4) == "corrupt_image"


def test_unknown_wnid_and_mixed_classes(tmp_path):
    fx.build(tmp_path, ("voc",))
    (tmp_path / "bbox_val" / "ILSVRC2012_val_00000001.xml").write_text(
        fx.voc_xml(1, (300, 200), 3, [[1, 1, 5, 5]]).replace(imagenet_wnids()[3], "n99999999")
    )
    dataset = ILSVRCBoxes(tmp_path)
    with pytest.raises(DatasetError, match="unknown WordNet id"):
        dataset[0]


def test_kaggle_file_faults(tmp_path):
    fx.build(tmp_path, ("kaggle",))
    csv = tmp_path / "LOC_val_solution.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",n01440764 1 2 3"  # 4 tokens
    csv.write_text("\n".join(lines) + "\n")
    dataset = ILSVRCBoxes(tmp_path)
    assert _reason(dataset, 0) == "malformed_annotation"
    csv.write_text("id,boxes\nx,y\n")
    with pytest.raises(DatasetError, match="ImageId,PredictionString"):
        ILSVRCBoxes(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        ILSVRCBoxes(tmp_path, layout="kaggle", boxes=tmp_path / "missing.csv")


def test_wsol_file_faults(tmp_path):
    folder = fx.build(tmp_path, ("wsol",)) / "metadata" / "ILSVRC" / "test"
    (folder / "localization.txt").write_text("val/ILSVRC2012_val_00000001.JPEG,1,2,3\n")
    with pytest.raises(DatasetError, match="localization.txt:1: expected 5"):
        ILSVRCBoxes(tmp_path, layout="wsol")
    (folder / "localization.txt").unlink()
    with pytest.raises(DatasetError):
        ILSVRCBoxes(tmp_path, layout="wsol", boxes=folder)


def test_real_file_faults(tmp_path):
    fx.build(tmp_path, ("voc",))
    (tmp_path / "real.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        ILSVRCBoxes(tmp_path)
    (tmp_path / "real.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(DatasetError, match="list of label lists"):
        ILSVRCBoxes(tmp_path)


def test_fit_boxes_scales_then_clips():
    boxes, clipped = fit_boxes(
        np.array([[10, 10, 50, 50], [90, 90, 300, 300]]), (100, 100), (200, 100)
    )
    assert boxes.tolist() == [[20.0, 10.0, 100.0, 50.0], [180.0, 90.0, 199.0, 99.0]]
    assert clipped == 1


# -- ImageNet-A ------------------------------------------------------------------------------
def test_imagenet_a_wnids_are_200_imagenet_classes():
    assert len(IMAGENET_A_WNIDS) == 200 == len(set(IMAGENET_A_WNIDS))
    assert set(IMAGENET_A_WNIDS) <= set(imagenet_wnids())


def test_imagenet_a_layout(tmp_path):
    for wnid in IMAGENET_A_WNIDS[:2]:
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (30, 20)).save(tmp_path / wnid / "a.jpg")
    dataset = ImageNetA(tmp_path)
    assert len(dataset) == 2 and len(dataset.class_indices) == 200
    assert [dataset[i].label for i in range(2)] == [
        imagenet_wnids().index(w) for w in IMAGENET_A_WNIDS[:2]
    ]
    (tmp_path / "n01440764").mkdir()  # tench is not an ImageNet-A class
    with pytest.raises(DatasetError, match="not ImageNet-A WordNet ids"):
        ImageNetA(tmp_path)


def test_real_sample_labels_match_val_labels(data_root):
    root = data_root / "ilsvrc_val_sample"
    dataset = ILSVRCBoxes(root)
    labels = dict(line.split() for line in (root / "val_labels.txt").read_text().splitlines())
    for index in range(0, len(dataset), 97):
        sample = dataset[index]
        assert sample.label == int(labels[sample.path.name])
        assert sample.real is not None


def test_box_layouts_stay_importable_from_datasets():
    from dense_readout.evaluation import box_layouts, datasets

    for name in ("BOX_LAYOUTS", "Annotation", "BoxLayout", "detect_layout", "register_box_layout"):
        assert getattr(datasets, name) is getattr(box_layouts, name), name
    assert all(hasattr(datasets, name) for name in datasets.__all__)
