"""Localization scores of the dense readout vs CAM methods on ILSVRC validation boxes.

For every image: the paper's preprocessing (shorter side 256, centre crop 224,
the model's own mean/std), boxes mapped through the same resize and crop
(:mod:`dense_readout.evaluation.protocol`), target = the ground-truth class.
:func:`dense_readout.compare.compare` runs every method on the same batch and
targets; each method's raw map is post-processed once per sign mode (ReLU
``positive`` / signed ``all``; bilinear to 224, min-max) and scored with
:mod:`dense_readout.localization`: pointing game (a maximal pixel inside the
union of the boxes), energy pointing game, MaxBoxAccV2 (all contours,
δ ∈ {0.3, 0.5, 0.7}, τ = 0, 0.001, …, 0.999) and seconds per image (wall time of
the method call only, batch ``--batch``, CPU).

Images are an evenly spaced subset of the sorted file list (``--limit``); the
slow methods (ScoreCAM, AblationCAM) run on the first ``--slow-limit`` of them.
Images whose boxes all fall outside the crop are skipped (counted).

    python benchmarks/compare_ilsvrc.py ../shared/data --limit 200 --slow-limit 8 \\
        --out docs/results/compare_ilsvrc.md
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

FAST = [
    "dense-readout",
    "cam",
    "gradcam",
    "hirescam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "eigencam",
    "layergradcam",
]
SLOW = ["scorecam", "ablationcam"]


def crop_boxes(protocol, size, boxes) -> np.ndarray:
    """Each box through the protocol's resize+crop (as a mask), back to an inclusive box."""
    out = []
    for box in np.asarray(boxes).reshape(-1, 4):
        mask = protocol.mask(size, box[None]).numpy()
        if mask.any():
            rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            out.append([cols[0], rows[0], cols[-1], rows[-1]])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


class Scores:
    """Per (method, sign) accumulators."""

    def __init__(self, thresholds):
        from dense_readout.localization import MaxBoxAcc

        self.box = MaxBoxAcc(thresholds=thresholds)
        self.pointing: list = []
        self.energy: list = []
        self.rank: list = []
        self.seconds = 0.0
        self.images = 0


def load_batch(dataset, protocol, indices):
    from dense_readout import load_image
    from dense_readout.errors import DatasetError, ImageLoadError

    images, masks, boxes, labels, skipped = [], [], [], [], defaultdict(int)
    for index in indices:
        try:
            sample = dataset[index]
            image = load_image(sample.path)
        except (DatasetError, ImageLoadError) as error:
            skipped[getattr(error, "reason", type(error).__name__)] += 1
            continue
        tensor, mask = protocol.transform(image, sample.boxes)
        cropped = crop_boxes(protocol, image.size, sample.boxes)
        if len(cropped) == 0 or not mask.any():
            skipped["no_box_in_crop"] += 1
            continue
        images.append(tensor)
        masks.append(mask)
        boxes.append(cropped)
        labels.append(sample.label)
    return images, masks, boxes, labels, skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "root", help="data root (holding ilsvrc_val_sample/) or the ILSVRC folder itself"
    )
    parser.add_argument(
        "--limit", type=int, default=200, help="images (evenly spaced over the file list)"
    )
    parser.add_argument("--slow-limit", type=int, default=8, help="images for --slow-methods")
    parser.add_argument("--methods", default=",".join(FAST))
    parser.add_argument("--slow-methods", default=",".join(SLOW))
    parser.add_argument("--signs", default="positive,all")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--normalization", default="model", choices=["model", "imagenet"])
    parser.add_argument("--threshold-step", type=float, default=0.001)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the markdown table here too")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from dense_readout import DenseReadout, load_pretrained
    from dense_readout.compare import compare, postprocess
    from dense_readout.evaluation.datasets import ILSVRCBoxes
    from dense_readout.evaluation.protocol import Protocol, paper_preprocess
    from dense_readout.localization import energy_pointing_game, pointing_game, relevance_rank

    root = Path(args.root)
    if (root / "ilsvrc_val_sample").is_dir():
        root = root / "ilsvrc_val_sample"
    dataset = ILSVRCBoxes(root, real=False)
    model, _, _, model_name = load_pretrained()
    readout = DenseReadout(model)
    protocol = Protocol(paper_preprocess(model, args.normalization))
    indices = np.unique(
        np.linspace(0, len(dataset) - 1, min(args.limit, len(dataset))).round().astype(int)
    )
    fast = [m for m in args.methods.split(",") if m]
    slow = [m for m in args.slow_methods.split(",") if m]
    signs = [s for s in args.signs.split(",") if s]
    thresholds = np.arange(0, 1, args.threshold_step)
    scores = {(m, s): Scores(thresholds) for m in fast + slow for s in signs}
    failures: dict = {}
    skipped_total: dict = defaultdict(int)
    used = 0
    started = time.time()
    for start in range(0, len(indices), args.batch):
        batch_indices = indices[start : start + args.batch]
        images, masks, boxes, labels, skipped = load_batch(dataset, protocol, batch_indices)
        for reason, count in skipped.items():
            skipped_total[reason] += count
        if not images:
            continue
        x = torch.stack(images)
        mask = torch.stack(masks)
        methods = fast + [m for m in slow if used < args.slow_limit]
        n_slow = max(0, min(len(images), args.slow_limit - used))
        for name in methods:
            count = len(images) if name in fast else n_slow
            if count == 0:
                continue
            result = compare(model, x[:count], labels[:count], methods=[name], readout=readout)
            if result.failures:
                failures.update(result.failures)
                continue
            raw = result.results[name].raw
            for sign in signs:
                maps = postprocess(raw, (x.shape[-2], x.shape[-1]), sign).numpy()
                entry = scores[(name, sign)]
                entry.box.update(maps, boxes[:count])
                entry.pointing.extend(pointing_game(maps, mask[:count]).tolist())
                entry.energy.extend(energy_pointing_game(maps, mask[:count]).tolist())
                entry.rank.extend(relevance_rank(maps, mask[:count]).tolist())
                entry.seconds += result.seconds[name]
                entry.images += count
        used += len(images)
        print(f"[{time.time() - started:7.0f}s] {used} images", file=sys.stderr, flush=True)

    header = (
        f"Embedded {model_name} (ImageNet weights), ILSVRC2012 val sample `{root}`: {used} images "
        f"(evenly spaced over {len(dataset)} files, --limit {args.limit}; skipped: "
        f"{dict(skipped_total) or 'none'}); slow methods on the first {min(args.slow_limit, used)} of them. "
        f"Preprocessing: shorter side {protocol.preprocess.resize}, centre crop {protocol.preprocess.crop}, "
        f"normalisation '{args.normalization}' (mean {protocol.preprocess.mean}, std {protocol.preprocess.std}). "
        f"Target: ground-truth class. Maps: raw → sign → bilinear 224 → min-max. Scores in %. "
        f"MaxBoxAccV2: all contours, δ ∈ {{30, 50, 70}}, τ step {args.threshold_step}. "
        f"Seconds: method call only, batch {args.batch}, {torch.get_num_threads()} CPU threads (shared machine)."
    )
    lines = [
        header,
        "",
        "| method | sign | images | pointing game | energy PG | MaxBoxAccV2 (δ=30/50/70) | rel. rank | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, sign), entry in scores.items():
        if entry.images == 0:
            continue
        box = entry.box.compute()
        per = "/".join(f"{100 * box.per_iou[d]:.1f}" for d in sorted(box.per_iou))
        lines.append(
            f"| {name} | {sign} | {entry.images} | {100 * np.nanmean(entry.pointing):.1f} | "
            f"{100 * np.nanmean(entry.energy):.1f} | {100 * box.v2:.1f} ({per}) | "
            f"{100 * np.nanmean(entry.rank):.1f} | {entry.seconds / entry.images:.3f} |"
        )
    for name, error in failures.items():
        lines.append(f"| {name} | — | — | — | — | failed: {error} | — | — |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/compare_ilsvrc.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        Path(args.out).write_text(
            f"# Localization: dense readout vs CAM methods (ILSVRC boxes)\n\n"
            f"Command: `{command}`\n\n{table}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
