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
import dataclasses
import sys

from ..errors import DatasetError, DenseReadoutError
from ..evaluation.thresholds import CELL_SCORES, DEFAULT_SCORES, DEFAULT_TAUS

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
        default=",".join(DEFAULT_SCORES),
        help=f"A.3 cell scores, comma-separated from {sorted(CELL_SCORES)}, or 'none'",
    )
    ilsvrc.add_argument(
        "--taus", default=",".join(str(t) for t in DEFAULT_TAUS), help="threshold sweep values"
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
    parser.add_argument(
        "--model", default=None, help="timm model name (default: embedded tf_efficientnet_lite0)"
    )
    parser.add_argument("--checkpoint", help="local state-dict file for --model (no downloads)")
    parser.add_argument(
        "--normalization",
        choices=["model", "imagenet"],
        default="model",
        help="model's own mean/std (default) or ImageNet mean/std",
    )
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


def _parse_list(text: str, cast=str) -> tuple:
    return (
        ()
        if text.strip().lower() in ("", "none")
        else tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    )


def run_bench(args: argparse.Namespace) -> int:
    """Build dataset, model and protocol from ``args`` and run the benchmark."""
    from ..evaluation.datasets import ILSVRCBoxes, ImageNetA
    from ..evaluation.protocol import Protocol, paper_preprocess
    from ..evaluation.runner import RunConfig, run_benchmark
    from ..pretrained import DEFAULT_MODEL, load_pretrained

    dataset: ILSVRCBoxes | ImageNetA
    try:
        if args.kind == "ilsvrc":
            real = False if args.no_real else args.real
            dataset = ILSVRCBoxes(
                args.root, layout=args.layout, boxes=args.boxes, images=args.images, real=real
            )
            thresholds = _parse_list(args.thresholds)
            taus = _parse_list(args.taus, float)
            fill = args.fill
        else:
            dataset = ImageNetA(args.root)
            thresholds, taus, fill = (), DEFAULT_TAUS, "mean"
        name = args.model or DEFAULT_MODEL
        model = load_pretrained(
            name, checkpoint=args.checkpoint, normalization=args.normalization
        ).model
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
