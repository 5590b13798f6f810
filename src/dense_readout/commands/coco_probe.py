"""``dense-readout coco-probe ROOT``: linear probe on a frozen backbone, read out per cell.

Runs :func:`dense_readout.experiments.coco.cross_validate` on a COCO folder
(``annotations/instances_<split>.json`` + ``<split>/``) with the embedded
EfficientNet-Lite0, caching the backbone features in ``--cache``, and prints
(or writes) the Table 3 metrics as JSON.

Example:
    >>> from dense_readout.cli import main
    >>> main(["coco-probe", "/no/such/coco"])
    2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DenseReadoutError
from ._model_options import add_model_options, check_model_options, load_model

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``coco-probe`` command."""
    parser = subparsers.add_parser(
        "coco-probe",
        help="COCO linear probe on frozen features, per-cell Table 3 metrics",
        description="k-fold linear probe on pooled frozen features, evaluated per cell on COCO masks.",
    )
    parser.add_argument("root", type=Path, help="COCO folder with annotations/ and <split>/")
    parser.add_argument("--split", default="val2017", help="split evaluated per cell")
    parser.add_argument(
        "--train-split",
        default=None,
        help="train the probe on this split (e.g. train2017) instead of k-fold on --split",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/coco-cache"))
    parser.add_argument("--folds", type=int, default=5)
    add_model_options(parser, random_weights=False, crop_pct=False)
    parser.add_argument("--fill", default="mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        check_model_options(args)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from ..evaluation.protocol import Protocol, paper_preprocess
    from ..experiments.coco import (
        CocoInstances,
        FeatureCache,
        ProbeConfig,
        cross_validate,
        probe_split,
    )

    try:
        loaded = load_model(args)
        model, name = loaded.model, loaded.name
        protocol = Protocol(paper_preprocess(model, args.normalization), fill=args.fill)
        dataset = CocoInstances(args.root, args.split, preprocess=protocol.preprocess)
        data = FeatureCache(args.cache, model, name, protocol, seed=args.seed).load(dataset)
        config = ProbeConfig(seed=args.seed)
        if args.train_split:
            train_set = CocoInstances(args.root, args.train_split, preprocess=protocol.preprocess)
            train = FeatureCache(
                args.cache, model, name, protocol, seed=args.seed, pooled_only=True
            ).load(train_set)
            if train_set.class_names != dataset.class_names:
                raise DenseReadoutError(
                    f"{args.train_split} and {args.split} define different categories."
                )
            result = probe_split(train, data, dataset.num_classes, config)
        else:
            result = cross_validate(data, dataset.num_classes, folds=args.folds, config=config)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {
        "backbone": name,
        "protocol": protocol.describe(),
        "dataset": dataset.statistics(),
        **result,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0
