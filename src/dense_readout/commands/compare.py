"""``dense-readout compare ROOT``: every attribution method, quality × faithfulness × sanity × cost.

Reads the ILSVRC layout ``bench`` reads (``ROOT`` holding ``val/`` and boxes, or a
folder holding ``ilsvrc_val_sample/``), runs the methods on the same images and
ground-truth targets and writes ``results.json``, ``results.md``,
``per_image.csv`` and ``report.html`` into ``--out``; per-image records under
``--out/records`` make a restarted run continue where it stopped. Under
``python -m torch.distributed.run`` the batches are sharded over the processes.
See ``docs/compare.md``. Exit status: 0 done, 2 bad arguments/data/model.

Example:
    >>> from dense_readout.cli import main
    >>> main(["compare", "/no/such/dir", "--out", "/tmp/dense-readout-compare-doctest"])
    2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DenseReadoutError
from ._model_options import add_model_options, check_model_options, load_model

__all__ = ["register", "run_compare"]

DEFAULT_METHODS = (
    "dense-readout,cam,gradcam,gradcam++,layercam,eigencam,layergradcam,"
    "integrated-gradients,lrp,random"
)
EXIT_OK, EXIT_SETUP_FAILED = 0, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    parser = subparsers.add_parser(
        "compare",
        help="benchmark attribution methods: localization, faithfulness, sanity, cost",
        description="Run every method on the same ILSVRC images and score it (docs/compare.md).",
    )
    parser.add_argument("root", metavar="ROOT", help="ILSVRC folder (val/ + boxes) or its parent")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names")
    parser.add_argument("--slow-methods", default="", help="methods run on --slow-limit images")
    parser.add_argument("--slow-limit", type=int, default=8)
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--limit", type=int, help="images, evenly spaced over the file list")
    parser.add_argument(
        "--metrics",
        default="localization,faithfulness,sanity,cost",
        help="groups: localization, faithfulness, sanity, cost",
    )
    parser.add_argument(
        "--subset", type=int, default=200, help="images for faithfulness and sanity (the first N)"
    )
    parser.add_argument("--road-limit", type=int, default=0, help="images for ROAD (the first N)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--mprt-levels", type=int, default=3, help="units randomised, top-down")
    parser.add_argument("--baseline", choices=["mean", "blur"], default="mean")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--forward-batch", type=int, default=32)
    parser.add_argument("--threshold-step", type=float, default=0.01, help="MaxBoxAccV2 τ step")
    parser.add_argument("--crop", type=int, default=224, help="crop size (resize = crop / 0.875)")
    parser.add_argument("--threads", type=int, help="torch threads per process")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing records")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the reports from the records"
    )
    add_model_options(parser, random_weights=False, crop_pct=False)  # the shared ones
    parser.set_defaults(func=run_compare)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _command() -> str:
    """The command line as typed (recorded in results.json, not part of the resume fingerprint)."""
    import shlex

    words = [a for a in sys.argv[1:] if a != "--report-only"]
    return "dense-readout " + " ".join(shlex.quote(a) for a in words)


def run_compare(args: argparse.Namespace) -> int:
    """Run ``compare``; returns the exit status."""
    from ..compare.bench.runner import BenchConfig, run_compare_bench
    from ..evaluation.datasets import ILSVRCBoxes
    from ..evaluation.protocol import Protocol, paper_preprocess

    try:
        check_model_options(args)
        root = Path(args.root)
        if (root / "ilsvrc_val_sample").is_dir():
            root = root / "ilsvrc_val_sample"
        dataset = ILSVRCBoxes(root, real=False)
        config = BenchConfig(
            methods=_names(args.methods),
            slow_methods=_names(args.slow_methods),
            metrics=_names(args.metrics),
            limit=args.limit,
            slow_limit=args.slow_limit,
            subset_limit=args.subset,
            road_limit=args.road_limit,
            batch_size=args.batch_size,
            steps=args.steps,
            forward_batch=args.forward_batch,
            threshold_step=args.threshold_step,
            mprt_levels=args.mprt_levels,
            baseline=args.baseline,
            threads=args.threads,
            workers=args.workers,
            progress=not args.no_progress,
            resume=not args.no_resume,
        )
        loaded = load_model(args)
        model, name = loaded.model, loaded.name
        protocol = Protocol(paper_preprocess(model, args.normalization, crop=args.crop))
        info = {"name": name, "checkpoint": args.checkpoint}
        if args.report_only:
            return _report_only(dataset, model, protocol, args.out, config, info)
        results = run_compare_bench(
            dataset, model, protocol, args.out, config, info, command=_command()
        )
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    if results is not None:
        from ..compare.bench.report import markdown_table

        print(markdown_table(results))
        print(f"reports in {args.out}")
    return EXIT_OK


def _report_only(dataset, model, protocol, out, config, info) -> int:
    from ..compare.bench.runner import rewrite_reports

    results = rewrite_reports(dataset, model, protocol, out, config, info, command=_command())
    print(f"reports rewritten from {results['rows']} records in {out}")
    return EXIT_OK
