"""``dense-readout bench ilsvrc|imagenet-a``: the paper's benchmark on your data copy.

Example (shell)::

    dense-readout bench ilsvrc --root ILSVRC2012 --out bench-out
    python -m torch.distributed.run --nproc_per_node=2 -m dense_readout.cli bench ilsvrc --root ... --out ...

Writes ``results.json``, ``results.md``, ``per_class.csv`` and (ILSVRC)
``thresholds.csv``/``thresholds.png`` into ``--out``; resumes from
``--out/checkpoint`` when started again with the same arguments. Exit status:
0 done, 2 bad arguments/data/model, 1 an item failed under ``--on-error stop``.

Example:
    >>> from dense_readout.cli import main
    >>> main(["bench", "ilsvrc", "--root", "/no/such/dir", "--out", "/tmp/x"])
    2
"""

from __future__ import annotations

import argparse
import sys

from ..errors import DatasetError, DenseReadoutError, InputError
from ._model_options import add_model_options, check_model_name, check_model_options, load_model

__all__ = ["register", "run_bench"]

EXIT_OK, EXIT_ITEM_FAILED, EXIT_SETUP_FAILED = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` with its ``ilsvrc`` and ``imagenet-a`` subcommands."""
    bench = subparsers.add_parser(
        "bench",
        help="the paper's ImageNet benchmark (ILSVRC boxes, ImageNet-A)",
        description="Run the paper's evaluation protocol (DESIGN/docs/benchmark.md) on a local dataset copy.",
    )
    kinds = bench.add_subparsers(dest="bench_kind", metavar="DATASET")
    ilsvrc = kinds.add_parser(
        "ilsvrc", help="ILSVRC2012 val with boxes (VOC XML, Kaggle CSV or wsol metadata)"
    )
    _common(ilsvrc)
    ilsvrc.add_argument(
        "--layout", choices=["voc", "kaggle", "wsol"], help="box layout (default: detect)"
    )
    ilsvrc.add_argument(
        "--boxes", help="annotation location (XML folder, LOC_val_solution.csv, wsol folder)"
    )
    ilsvrc.add_argument("--images", help="folder of ILSVRC2012_val_*.JPEG (default ROOT/val)")
    ilsvrc.add_argument("--real", help="ReaL real.json (default ROOT/real.json if present)")
    ilsvrc.add_argument("--no-real", action="store_true", help="ignore ReaL labels")
    ilsvrc.add_argument(
        "--fill",
        default="mean",
        help="occlusion fill: mean (zero after normalisation, default), black, white, gray or r,g,b in [0,1]",
    )
    ilsvrc.add_argument(
        "--thresholds",
        default=None,
        help="A.3 cell scores, comma-separated names of "
        "dense_readout.evaluation.thresholds.CELL_SCORES, or 'none' "
        "(default: its DEFAULT_SCORES)",
    )
    ilsvrc.add_argument(
        "--taus",
        default=None,
        help="threshold sweep values, comma-separated (default: 0, 0.05, ..., 1)",
    )
    ilsvrc.set_defaults(func=run_bench, kind="ilsvrc")
    imagenet_a = kinds.add_parser(
        "imagenet-a", help="ImageNet-A (<wnid>/<file> folders), logits restricted to 200 classes"
    )
    _common(imagenet_a)
    imagenet_a.set_defaults(func=run_bench, kind="imagenet-a")
    bench.set_defaults(func=lambda args: (bench.print_help(), EXIT_SETUP_FAILED)[1])


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="dataset root")
    add_model_options(parser, random_weights=False, crop_pct=False)
    parser.add_argument(
        "--crop", type=int, default=224, help="crop size (resize = crop / 0.875; default 224)"
    )
    parser.add_argument(
        "--interpolation",
        choices=["model", "bicubic", "bilinear"],
        default="model",
        help="image resize filter: the model's data config (default) or an explicit one",
    )
    parser.add_argument("--out", required=True, help="output directory (reports + checkpoints)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per batch (×3 inputs for ILSVRC)"
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument(
        "--on-error",
        choices=["skip", "stop"],
        default="skip",
        help="a bad item (missing/malformed annotation, no box, corrupt image): skip and count, or stop",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=10, help="save state every N batches"
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _check(args: argparse.Namespace) -> None:
    """Check what needs neither the dataset nor the model (a --model typo needs timm)."""
    check_model_options(args)
    for option in ("limit", "batch_size", "workers", "checkpoint_every", "crop"):
        value = getattr(args, option)
        least = 0 if option == "workers" else 1
        if value is not None and value < least:
            flag = "--" + option.replace("_", "-")
            raise InputError(f"{flag} must be >= {least}, got {value}.")
    if args.kind == "ilsvrc" and args.taus is not None:
        try:
            _parse_list(args.taus, float)
        except ValueError:
            raise InputError(
                f"--taus {args.taus}: expected comma-separated numbers, e.g. 0.2,0.5."
            ) from None
    if args.model is not None:
        check_model_name(args.model)


def _parse_list(text: str, cast=str) -> tuple:
    return (
        ()
        if text.strip().lower() in ("", "none")
        else tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    )


def run_bench(args: argparse.Namespace) -> int:
    """Build dataset, model and protocol from ``args`` and run the benchmark."""
    try:
        _check(args)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    import dataclasses

    from ..evaluation.datasets import ILSVRCBoxes, ImageNetA
    from ..evaluation.protocol import Protocol, paper_preprocess
    from ..evaluation.runner import RunConfig, run_benchmark
    from ..evaluation.thresholds import DEFAULT_SCORES, DEFAULT_TAUS

    dataset: ILSVRCBoxes | ImageNetA
    try:
        if args.kind == "ilsvrc":
            real = False if args.no_real else args.real
            dataset = ILSVRCBoxes(
                args.root, layout=args.layout, boxes=args.boxes, images=args.images, real=real
            )
            thresholds = DEFAULT_SCORES if args.thresholds is None else _parse_list(args.thresholds)
            taus = DEFAULT_TAUS if args.taus is None else _parse_list(args.taus, float)
            fill = args.fill
        else:
            dataset = ImageNetA(args.root)
            thresholds, taus, fill = (), DEFAULT_TAUS, "mean"
        loaded = load_model(args)
        model, name = loaded.model, loaded.name
        preprocess = paper_preprocess(model, args.normalization, crop=args.crop)
        if args.interpolation != "model":
            preprocess = dataclasses.replace(preprocess, interpolation=args.interpolation)
        protocol = Protocol(preprocess, fill=fill)
        protocol.fill_value()  # validate now
        config = RunConfig(
            batch_size=args.batch_size,
            workers=args.workers,
            limit=args.limit,
            on_error=args.on_error,
            checkpoint_every=args.checkpoint_every,
            thresholds=thresholds,
            taus=taus or DEFAULT_TAUS,
            progress=not args.no_progress,
            device=args.device,
            resume=not args.no_resume,
        )
        info = {"name": name, "checkpoint": args.checkpoint, "normalization": args.normalization}
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    try:
        results = run_benchmark(
            dataset, model, protocol, args.out, config, kind=args.kind, model_info=info
        )
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ITEM_FAILED
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    _summary(results, args.out)
    return EXIT_OK


def _summary(results: dict, out: str) -> None:
    from ..evaluation.reports import markdown_table

    print(markdown_table(results, str(results["model"].get("name"))))
    print(
        f"images: {results['images']['evaluated']} evaluated, skipped {results['images']['skipped']}"
    )
    if results.get("speed"):
        speed = results["speed"]
        print(
            f"speed: {speed['images_per_s']:.2f} img/s, forward-bound {speed['forward_bound_images_per_s']:.2f} "
            f"img/s, ratio {speed['ratio_to_forward_bound']:.2f}"
        )
    print(f"reports in {out}")
