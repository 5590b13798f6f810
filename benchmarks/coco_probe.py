"""COCO frozen-backbone linear probe read out per cell (paper 4.3, Table 3 metrics).

    python benchmarks/coco_probe.py ../shared/data --cache runs/coco-cache \
        --results docs/results/coco_probe_lite0.json

Backbone: the embedded ImageNet EfficientNet-Lite0 (frozen; its grid ``F`` is
``result.features``), paper protocol (shorter side 256, centre crop 224), the
model's own normalisation unless ``--normalization imagenet``. The sample is
tiny, so the probe is k-fold cross-validated: every image is evaluated once by
a probe trained on the other folds. The second run reads the backbone features
from ``--cache`` (the JSON records whether they were computed or cached and the
time of each phase).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> int:
    from dense_readout import load_pretrained
    from dense_readout.evaluation.protocol import Protocol, paper_preprocess
    from dense_readout.experiments.coco import (
        CocoInstances,
        FeatureCache,
        ProbeConfig,
        cross_validate,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data_root", type=Path, help="folder holding coco_val2017_sample/ (or the COCO root itself)"
    )
    parser.add_argument("--split", default="val2017")
    parser.add_argument("--cache", type=Path, default=Path("runs/coco-cache"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--normalization", choices=("model", "imagenet"), default="model")
    parser.add_argument("--fill", default="mean")
    parser.add_argument("--epochs", type=int, default=ProbeConfig.epochs)
    parser.add_argument("--lr", type=float, default=ProbeConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = (
        args.data_root / "coco_val2017_sample"
        if (args.data_root / "coco_val2017_sample").is_dir()
        else args.data_root
    )
    timing = {}
    start = time.time()
    model, _, _, name = load_pretrained()
    protocol = Protocol(paper_preprocess(model, args.normalization), fill=args.fill)
    dataset = CocoInstances(root, args.split, preprocess=protocol.preprocess)
    timing["annotations_and_filter_s"] = time.time() - start

    start = time.time()
    cache = FeatureCache(args.cache, model, name, protocol, seed=args.seed)
    data = cache.load(dataset, progress=True)
    timing["features_s"] = time.time() - start

    start = time.time()
    config = ProbeConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    result = cross_validate(data, dataset.num_classes, folds=args.folds, config=config)
    timing["probe_cv_s"] = time.time() - start

    summary = {
        "command": "python benchmarks/coco_probe.py "
        + " ".join(
            [str(args.data_root)]
            + [
                f"--{k.replace('_', '-')} {v}"
                for k, v in vars(args).items()
                if k != "data_root" and v is not None
            ]
        ),
        "backbone": name,
        "grid": list(data["grid"].shape[-2:]),
        "feature_dim": int(data["grid"].shape[1]),
        "protocol": protocol.describe(),
        "dataset": dataset.statistics(),
        "evaluation_class": "validation_positive: seeded uniform draw from the image's kept labels",
        "foreground": "kept instance masks of the evaluation class, any-pixel occupancy",
        "features_from_cache": not data["computed"],
        "cache_file": str(cache.path(dataset)),
        "timing_seconds": timing,
        **result,
    }
    print(json.dumps(summary, indent=1))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
