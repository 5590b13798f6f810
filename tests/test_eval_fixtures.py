"""A small ILSVRC-like fixture written in all three box layouts (shared by the eval tests).

One set of images and boxes is written as official VOC XMLs, as Kaggle's
``LOC_val_solution.csv`` and as wsolevaluation metadata, so loaders must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from dense_readout.imagenet import imagenet_wnids

# (file number, (width, height), class index, boxes xmin ymin xmax ymax, ReaL labels)
ITEMS = [
    (1, (300, 200), 3, [[10, 20, 120, 150]], [3]),
    (2, (200, 320), 7, [[0, 0, 199, 319]], [7, 8]),  # covers everything
    (3, (227, 227), 1, [[5, 5, 60, 70], [100, 120, 220, 200]], []),  # empty ReaL set
    (4, (256, 256), 0, [[0, 0, 10, 10]], [0]),  # cropped away by the centre crop
    (5, (240, 260), 5, [[30, 40, 200, 250]], [5, 2]),
    (6, (260, 240), 9, [[80, 60, 180, 170]], [9]),
]


def image_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def write_images(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images = root / "val"
    images.mkdir(parents=True, exist_ok=True)
    for number, (width, height), *_ in ITEMS:
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(array).save(images / image_name(number), quality=90)
    return images


def voc_xml(number: int, size: tuple[int, int], label: int, boxes) -> str:
    wnid = imagenet_wnids()[label]
    objects = "".join(
        f"<object><name>{wnid}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return (
        f"<annotation><filename>{image_name(number)[:-5]}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objects}</annotation>"
    )


def write_voc(root: Path) -> Path:
    folder = root / "bbox_val"
    folder.mkdir(parents=True, exist_ok=True)
    for number, size, label, boxes, _ in ITEMS:
        (folder / f"{image_name(number)[:-5]}.xml").write_text(voc_xml(number, size, label, boxes))
    return folder


def write_kaggle(root: Path) -> Path:
    lines = ["ImageId,PredictionString"]
    for number, _, label, boxes, _ in ITEMS:
        wnid = imagenet_wnids()[label]
        tokens = " ".join(f"{wnid} {b[0]} {b[1]} {b[2]} {b[3]}" for b in boxes)
        lines.append(f"{image_name(number)[:-5]},{tokens}")
    path = root / "LOC_val_solution.csv"
    path.write_text("\n".join(lines) + "\n")
    write_synsets(root)
    return path


def write_synsets(root: Path) -> Path:
    path = root / "LOC_synset_mapping.txt"
    path.write_text("\n".join(f"{w} class {i}" for i, w in enumerate(imagenet_wnids())) + "\n")
    return path


def write_wsol(root: Path) -> Path:
    folder = root / "metadata" / "ILSVRC" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, boxes_lines = [], [], [], []
    for number, size, label, boxes, _ in ITEMS:
        name = f"val/{image_name(number)}"
        ids.append(name)
        labels.append(f"{name},{label}")
        sizes.append(f"{name},{size[0]},{size[1]}")
        boxes_lines += [f"{name},{b[0]},{b[1]},{b[2]},{b[3]}" for b in boxes]
    for file, rows in (
        ("image_ids.txt", ids),
        ("class_labels.txt", labels),
        ("image_sizes.txt", sizes),
        ("localization.txt", boxes_lines),
    ):
        (folder / file).write_text("\n".join(rows) + "\n")
    return folder


def write_real(root: Path) -> Path:
    entries = [[] for _ in range(10)]
    for number, _, _, _, real in ITEMS:
        entries[number - 1] = real
    path = root / "real.json"
    path.write_text(json.dumps(entries))
    return path


def build(root: Path, layouts=("voc",), real: bool = True) -> Path:
    """Write the fixture under ``root`` in the given layouts; returns ``root``."""
    write_images(root)
    writers = {"voc": write_voc, "kaggle": write_kaggle, "wsol": write_wsol}
    for layout in layouts:
        writers[layout](root)
    if real:
        write_real(root)
    return root


def test_fixture_writes_every_layout(tmp_path):
    build(tmp_path, ("voc", "kaggle", "wsol"))
    assert len(list((tmp_path / "bbox_val").glob("*.xml"))) == len(ITEMS)
    assert (tmp_path / "LOC_val_solution.csv").read_text().count("\n") == len(ITEMS) + 1
    assert (tmp_path / "metadata/ILSVRC/test/localization.txt").read_text().count("\n") == sum(
        len(item[3]) for item in ITEMS
    )


def build_many(root: Path, count: int, seed: int = 1) -> Path:
    """``count`` random images (labels 0..9, 1-3 boxes, ReaL sets) in the VOC layout."""
    rng = np.random.default_rng(seed)
    images, boxes_dir = root / "val", root / "bbox_val"
    images.mkdir(parents=True, exist_ok=True)
    boxes_dir.mkdir(parents=True, exist_ok=True)
    real = [[] for _ in range(count)]
    for number in range(1, count + 1):
        width, height = int(rng.integers(120, 320)), int(rng.integers(120, 320))
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        for _ in range(4):  # flat coloured patches give the cells different features
            x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            array[y0 : y0 + int(rng.integers(20, 120)), x0 : x0 + int(rng.integers(20, 120))] = (
                rng.integers(0, 256, 3)
            )
        Image.fromarray(array).save(images / image_name(number), quality=85)
        label = int(rng.integers(0, 10))
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
            boxes.append(
                [x0, y0, int(rng.integers(x0 + 5, width)), int(rng.integers(y0 + 5, height))]
            )
        (boxes_dir / f"{image_name(number)[:-5]}.xml").write_text(
            voc_xml(number, (width, height), label, boxes)
        )
        real[number - 1] = sorted({label, int(rng.integers(0, 10))}) if rng.random() > 0.2 else []
    (root / "real.json").write_text(json.dumps(real))
    return root


def tiny_model(seed: int = 0):
    """A random-init timm ``test_resnet`` whose predictions spread over classes 0..9."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:10].normal_(0, 3.0)
        # remove the direction of the average feature vector: cells then differ in their top-1
        mean = model.forward_features(
            torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
        )
        mean = mean.mean(dim=(0, 2, 3))
        weight = model.fc.weight[:10]
        weight -= (weight @ mean).unsqueeze(1) * mean / mean.dot(mean)
        model.fc.bias.fill_(-30.0)
        model.fc.bias[:10] = 0.0
    return model


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    import torch

    torch.save(tiny_model(seed).state_dict(), path)
    return path
