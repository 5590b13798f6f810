"""WSSS seeds on the COCO sample: the readout of a GAP-linear COCO classifier vs a Grad-CAM loop.

The classifier is the paper's COCO probe (A.1): the embedded EfficientNet-Lite0 frozen,
a :class:`~dense_readout.experiments.coco.LinearProbe` (L2 norm, dropout, Linear)
trained on the GAP embeddings of the sample's images with their image-level labels
(the A.1 filter's kept classes). As in WSSS, the seeds are made on the images the
classifier was trained with, for their ground-truth classes. Then, in one process:

* **readout**: ``export_dataset`` of the probe's per-cell readout (all 80 classes, one
  forward per image), then :func:`~dense_readout.pseudo_labels.make_pseudo_labels`.
  The probe L2-normalises the GAP embedding, so two readouts: **exact** — ``fc`` on
  the cells divided by the norm of their mean (an image-level constant), whose cell
  mean *is* the probe's logit — and the paper's **pointwise head** (each cell
  normalised by its own norm; not a decomposition);
* **Grad-CAM loop**: pytorch-grad-cam ``GradCAM`` on the backbone's last layer, run once
  per ground-truth class of each image (as CLIP-ES ``generate_cams_voc12.py`` does),
  its maps through the same seed recipe (ReLU, max-normalisation, background 0.15,
  argmax) on the original image.

Both are scored against semantic masks from the COCO instances
(:class:`~dense_readout.pseudo_labels.coco_masks.CocoSemanticMasks`): mIoU at IRN's 0.15
and the best of a threshold sweep, and the seconds each method spent on its maps.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pseudo_labels_coco.py ../shared/data \\
        --work runs/pseudo_coco --json docs/results/pseudo_labels_coco.json [--limit N --train-all]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results
from dense_readout import DenseReadout, load_image, load_pretrained
from dense_readout.experiments.coco import LinearProbe, ProbeConfig, train_probe
from dense_readout.export import (
    ExportConfig,
    export_dataset,
    geometry_record,
    open_source,
    open_store,
    to_original,
)
from dense_readout.pseudo_labels import (
    ConfusionMatrix,
    PseudoLabelConfig,
    ThresholdSweep,
    labels_from_normalised,
    make_pseudo_labels,
    normalise_maps,
)
from dense_readout.pseudo_labels.coco_masks import CocoSemanticMasks
from dense_readout.pseudo_labels.run import DEFAULT_SWEEP


class ProbeClassifier(nn.Module):
    """Backbone grid → GAP → the probe: the GAP-linear COCO classifier as one model."""

    def __init__(self, backbone: nn.Module, probe: LinearProbe) -> None:
        super().__init__()
        self.backbone, self.probe = backbone, probe

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def grid_over_pooled_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The grid divided by the norm of its GAP: ``fc`` on these cells averages to the logits."""
        grid = self.grid(x)
        return grid / grid.mean(dim=(2, 3), keepdim=True).norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.grid(x).mean(dim=(2, 3)))


def train_classifier(source, backbone, preprocess, classes: int) -> ProbeClassifier:
    """Pooled Lite0 features of every image (not timed), then the probe on them."""
    pooled = []
    with torch.inference_mode():
        for path in source.paths:
            x = preprocess(load_image(path, exif_transpose=False))[None]
            pooled.append(backbone.forward_features(x).mean(dim=(2, 3))[0])
    labels = torch.zeros(len(source.paths), classes, dtype=torch.bool)
    for row, image_labels in enumerate(source.labels):
        labels[row, list(image_labels)] = True
    probe = train_probe(torch.stack(pooled).float(), labels, classes, ProbeConfig())
    return ProbeClassifier(backbone, probe).eval()


def readout_seeds(source, readout, preprocess, work: Path, threshold: float) -> dict:
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    config = ExportConfig(dtype="float32", batch_size=8, progress=False)
    tic = time.perf_counter()
    summary = export_dataset(source, store, readout, preprocess, config, {"model": "probe"})
    wall = time.perf_counter() - tic
    result = make_pseudo_labels(
        open_store(store),
        work / "labels",
        PseudoLabelConfig(bg_threshold=threshold, sweep=DEFAULT_SWEEP),
        truth=f"coco:{source.root}",
        progress=False,
    )
    evaluation = result["evaluation"]
    return {
        "exact": bool(summary["settings"]["exact"]),
        "maps_s": round(summary["timing"]["forward_s"], 2),
        "export_wall_s": round(wall, 2),
        "forward_passes": len(source.paths),
        "miou": evaluation["miou"],
        "best": evaluation["best"],
        "sweep": evaluation["sweep"],
        "iou": evaluation["iou"],
        "unscored_pixels": evaluation["unscored_pixels"],
    }


def gradcam_seeds(source, classifier, preprocess, masks, threshold: float) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=classifier, target_layers=[classifier.backbone.bn2])
    classes = len(source.class_names)
    confusion = ConfusionMatrix(1 + classes)
    sweep = ThresholdSweep(DEFAULT_SWEEP, 1 + classes)
    seconds, passes = 0.0, 0
    for path, image_labels in zip(source.paths, source.labels, strict=True):
        image = load_image(path, exif_transpose=False)
        x = preprocess(image)[None]
        tic = time.perf_counter()
        maps = [cam(input_tensor=x, targets=[ClassifierOutputTarget(c)])[0] for c in image_labels]
        seconds += time.perf_counter() - tic
        passes += len(image_labels)
        on_image = to_original(np.stack(maps), geometry_record(preprocess, image.size))
        normalised = normalise_maps(on_image)
        truth = masks.for_path(path)
        confusion.update(labels_from_normalised(normalised, image_labels, threshold), truth)
        sweep.update(normalised, image_labels, truth)
    names = ["background", *source.class_names]
    return {
        "maps_s": round(seconds, 2),
        "backward_passes": passes,
        "miou": confusion.miou(),
        "best": sweep.best(),
        "sweep": sweep.curve(),
        "iou": dict(zip(names, map(_float, confusion.iou()), strict=True)),
        "unscored_pixels": confusion.unscored,
    }


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the shared data root (holds coco_val2017_sample/)")
    parser.add_argument("--work", default="runs/pseudo_coco")
    parser.add_argument("--json", default="docs/results/pseudo_labels_coco.json")
    parser.add_argument("--limit", type=int, default=0, help="images (0: all)")
    parser.add_argument("--bg-threshold", type=float, default=0.15)
    parser.add_argument(
        "--train-all", action="store_true", help="train the probe on all images, seed --limit"
    )
    args = parser.parse_args()
    root = Path(args.data) / "coco_val2017_sample"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    backbone, preprocess, _, _ = load_pretrained()
    source = open_source(root, "coco")
    classes = len(source.class_names)
    torch.manual_seed(0)
    training = copy.copy(source)
    if args.limit:
        source.paths, source.labels = source.paths[: args.limit], source.labels[: args.limit]
        if not args.train_all:
            training = source
    classifier = train_classifier(training, backbone, preprocess, classes)
    masks = CocoSemanticMasks(root)
    probe = classifier.probe
    pointwise = DenseReadout(classifier, features=classifier.grid, head=probe)
    exact = DenseReadout(classifier, features=classifier.grid_over_pooled_norm, head=probe.fc)
    readout = readout_seeds(source, exact, preprocess, work / "exact", args.bg_threshold)
    paper = readout_seeds(source, pointwise, preprocess, work / "pointwise", args.bg_threshold)
    gradcam = gradcam_seeds(source, classifier, preprocess, masks, args.bg_threshold)
    per_image = [len(labels) for labels in source.labels]
    payload = {
        "images": len(source.paths),
        "probe_training_images": len(training.paths),
        "classes_per_image_mean": round(float(np.mean(per_image)), 3),
        "preprocessing": "embedded Lite0's own (shorter side 224, centre crop 224)",
        "classifier": "LinearProbe on frozen Lite0 GAP features, trained on the sample's "
        "first probe_training_images images, which include the seeded ones (WSSS convention), "
        "ProbeConfig defaults",
        "bg_threshold": args.bg_threshold,
        "readout": readout,
        "readout_pointwise_head": paper,
        "gradcam_loop": gradcam,
        "time_ratio_gradcam_to_readout": round(gradcam["maps_s"] / readout["maps_s"], 2),
    }
    write_results(args.json, payload)
    print(
        f"readout mIoU {100 * readout['miou']:.1f} ({readout['maps_s']} s) | "
        f"pointwise head {100 * paper['miou']:.1f} | "
        f"Grad-CAM loop mIoU {100 * gradcam['miou']:.1f} ({gradcam['maps_s']} s)"
    )


if __name__ == "__main__":
    main()


def coco_table(data: dict) -> str:
    """The docs' table (docs/export.md) from the JSON this script writes."""
    rows = [
        ("readout, exact (cells / ‖GAP‖)", data["readout"], f"{data['images']} forwards"),
        (
            "readout, pointwise head (paper)",
            data["readout_pointwise_head"],
            f"{data['images']} forwards",
        ),
        (
            "Grad-CAM, once per class present",
            data["gradcam_loop"],
            f"{data['gradcam_loop']['backward_passes']} forward+backward",
        ),
    ]
    header = (
        f"| seeds ({data['images']} COCO images) | passes | mIoU at bg {data['bg_threshold']} "
        "| best mIoU (bg) | seconds for the maps |"
    )
    lines = [header, "|---|---|---|---|---|"]
    for name, result, passes in rows:
        best = result["best"]
        lines.append(
            f"| {name} | {passes} | {100 * result['miou']:.1f} | {100 * best['miou']:.1f} "
            f"({best['bg_threshold']}) | {result['maps_s']} |"
        )
    return "\n".join(lines)
