"""``dense-readout export`` and ``dense-readout pseudo-labels``: all-class maps of a dataset.

* ``export ROOT --out STORE``: every image of ``ROOT`` (a plain folder, ILSVRC val
  with boxes, or COCO; detected or ``--layout``) through the model into one chunked
  store (:mod:`dense_readout.export`): the maps (``--classes``), logits, geometry,
  labels, optionally the features; ``--scales 1,0.5,1.5,2 --flip`` for WSSS maps.
  Rerun the same command to resume after a kill; under ``python -m
  torch.distributed.run --nproc_per_node N -m dense_readout.cli export ...`` each
  process exports every N-th batch into the same store.
* ``pseudo-labels STORE --out DIR``: the WSSS seeds (:mod:`dense_readout.pseudo_labels`)
  as VOC palette PNGs; ``--eval coco`` or ``--eval folder:DIR`` scores them.

Example:
    >>> from dense_readout.cli import main
    >>> main(["pseudo-labels", "/no/such/store", "--out", "/tmp/never"])
    2
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import DenseReadoutError

__all__ = ["register", "run_export", "run_pseudo_labels"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``pseudo-labels``."""
    from ._extractor import add_extractor_options

    export = subparsers.add_parser(
        "export", help="all-class maps of a whole dataset into one chunked store (Zarr)"
    )
    export.add_argument("root", metavar="ROOT", help="dataset root: folder, ILSVRC or COCO")
    export.add_argument("--out", required=True, metavar="STORE", help="store folder")
    export.add_argument(
        "--layout",
        choices=("folder", "ilsvrc", "coco"),
        default=None,
        help="dataset layout (default: detected)",
    )
    export.add_argument(
        "--classes", default="all", help="maps kept: all (default), topk:N, gt, or a list 3,17"
    )
    export.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    export.add_argument(
        "--scales",
        type=_floats,
        default=(1.0,),
        metavar="S,S",
        help="input scales summed on the 1.0 grid (WSSS: 1,0.5,1.5,2)",
    )
    export.add_argument("--flip", action="store_true", help="add the mirrored input's maps")
    export.add_argument("--features", action="store_true", help="also store the grid features")
    export.add_argument("--batch-size", type=int, default=32)
    export.add_argument("--workers", type=int, default=2, help="decoding processes")
    export.add_argument("--device", default="cpu")
    export.add_argument("--no-progress", action="store_true")
    add_extractor_options(export)
    export.set_defaults(func=run_export)

    labels = subparsers.add_parser(
        "pseudo-labels", help="WSSS seed labels (VOC PNGs) from an export store, with --eval"
    )
    labels.add_argument("store", metavar="STORE")
    labels.add_argument("--out", required=True, metavar="DIR")
    labels.add_argument("--bg-threshold", type=float, default=0.15, help="IRN's 0.15 (default)")
    labels.add_argument("--image-classes", default="gt", help="gt (default), top:N or prob:P")
    labels.add_argument("--eval", default=None, metavar="TRUTH", help="coco or folder:DIR")
    labels.add_argument(
        "--sweep",
        type=_floats,
        default=None,
        metavar="T,T",
        help="background thresholds scored with --eval (default 0.05…0.60)",
    )
    labels.add_argument("--no-png", action="store_true", help="only the JSON summary")
    labels.add_argument("--no-progress", action="store_true")
    labels.set_defaults(func=run_pseudo_labels)


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def run_export(args: argparse.Namespace) -> int:
    """Run ``export``; returns the exit status."""
    import torch

    from ..export import ExportConfig, export_dataset, open_source
    from ..preprocessing import Preprocess
    from ..readout import DenseReadout
    from ._model_options import load_model
    from ._setup import resolve_device

    try:
        source = open_source(args.root, args.layout)
        device = resolve_device(args.device)
        if args.random_weights:
            torch.manual_seed(args.seed)  # the same seed gives the same random model
        loaded = load_model(args)
        preprocess = loaded.preprocess
        if args.input_size:
            preprocess = Preprocess.from_model(
                loaded.model, args.normalization, crop=args.input_size, crop_pct=args.crop_pct
            )
        if source.class_names is None:
            source.class_names = loaded.class_names
        info = {
            "model": loaded.name,
            "weights": loaded.weights,
            "checkpoint": args.checkpoint,
            "seed": args.seed if args.random_weights else None,
        }
        config = ExportConfig(
            args.classes,
            args.dtype,
            tuple(args.scales),
            args.flip,
            args.features,
            args.batch_size,
            args.workers,
            not args.no_progress,
        )
        readout = DenseReadout(loaded.model.to(device))
        summary = export_dataset(source, args.out, readout, preprocess, config, info, device)
    except (DenseReadoutError, OSError) as error:
        return _fail(error)
    counts = summary["counts"]
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{args.out}: {counts['exported']} of {counts['images']} images exported, "
            f"{counts['unreadable'] + counts['error']} skipped, {counts['pending']} pending"
        )
    return 0


def run_pseudo_labels(args: argparse.Namespace) -> int:
    """Run ``pseudo-labels``; returns the exit status."""
    from ..export import open_store
    from ..pseudo_labels import PseudoLabelConfig, make_pseudo_labels
    from ..pseudo_labels.run import DEFAULT_SWEEP

    try:
        store = open_store(args.store)
        config = PseudoLabelConfig(
            args.bg_threshold,
            args.image_classes,
            tuple(args.sweep or DEFAULT_SWEEP),
            not args.no_png,
        )
        summary = make_pseudo_labels(store, args.out, config, args.eval, not args.no_progress)
    except (DenseReadoutError, OSError) as error:
        return _fail(error)
    line = f"{args.out}: {summary['counts']['labelled']} label maps"
    evaluation = summary.get("evaluation")
    if evaluation:
        best = evaluation["best"]
        line += (
            f"; mIoU {100 * evaluation['miou']:.1f} at bg {args.bg_threshold}, best "
            f"{100 * best['miou']:.1f} at {best['bg_threshold']}"
        )
    print(line)
    print(json.dumps(summary["counts"]))
    return 0
