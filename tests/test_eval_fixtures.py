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
    for file, rows in (("image_ids.txt", ids), ("class_labels.txt", labels),
                       ("image_sizes.txt", sizes), ("localization.txt", boxes_lines)):
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
