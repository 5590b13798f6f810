"""``dense-readout synthetic ...``: the synthetic single-label multi-object experiment.

Subcommands: ``generate`` (write scenes to disk), ``sheet`` (the 20-class contact
sheet), ``recipes`` (list training recipes), ``train`` (train or resume a GAP
classifier), ``evaluate`` (a checkpoint on a fresh test split, with bootstrap
intervals), ``figures`` (training curves and the Fig. 1 overlay of a run).

Example:
    >>> from dense_readout.cli import main
    >>> main(["synthetic", "recipes"])  # doctest: +ELLIPSIS
    cpu-resnet18 ...
    0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import DenseReadoutError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synthetic`` command and its subcommands."""
    parser = subparsers.add_parser(
        "synthetic",
        help="synthetic multi-object scenes: generate, train, figures",
        description="Synthetic single-label multi-object experiment (paper 4.4, A.2).",
    )
    sub = parser.add_subparsers(dest="synthetic_command", metavar="SUBCOMMAND", required=True)

    generate = sub.add_parser(
        "generate", help="write scenes (PNG image, masks, JSON record) to a folder"
    )
    generate.add_argument("out", type=Path)
    generate.add_argument("--count", type=int, default=100)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--split", default="train", choices=("train", "val", "test"))
    generate.add_argument("--start", type=int, default=0, help="first scene index")
    generate.set_defaults(func=_generate)

    sheet = sub.add_parser("sheet", help="contact sheet of the 20 classes (paper Fig. 4)")
    sheet.add_argument("out", type=Path, help="PNG file to write")
    sheet.add_argument("--tile", type=int, default=96)
    sheet.set_defaults(func=_sheet)

    recipes = sub.add_parser("recipes", help="list the training recipes")
    recipes.set_defaults(func=_recipes)

    train = sub.add_parser("train", help="train (or resume) a GAP classifier from scratch")
    train.add_argument("--recipe", default="cpu-resnet18")
    train.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoints, history.json)"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a recipe field, e.g. --set epochs=2 (JSON values)",
    )
    train.add_argument(
        "--max-epochs", type=int, default=None, help="stop after this many epochs in this call"
    )
    train.add_argument("--fresh", action="store_true", help="ignore an existing last.pt")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    _add_evaluate(sub)

    figures = sub.add_parser("figures", help="training curves and Fig. 1 overlay of a run")
    figures.add_argument("run", type=Path, help="run folder written by 'synthetic train'")
    figures.add_argument(
        "--out", type=Path, default=None, help="folder for the PNGs (default: the run folder)"
    )
    figures.add_argument("--checkpoint", default="last.pt")
    figures.set_defaults(func=_figures)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """``synthetic evaluate``: a checkpoint on a fresh split, with bootstrap intervals."""
    evaluate = sub.add_parser(
        "evaluate", help="Top-1 and Loc. of a run on a fresh split, with bootstrap intervals"
    )
    evaluate.add_argument("run", type=Path, help="run folder (or a checkpoint file)")
    evaluate.add_argument("--checkpoint", default="best.pt", help="file in the run folder")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--count", type=int, default=10_000, help="scenes to render")
    evaluate.add_argument(
        "--seed", type=int, default=None, help="scene seed (default: the run's data seed + 1)"
    )
    evaluate.add_argument("--batch-size", type=int, default=200)
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--level", type=float, default=0.95, help="interval coverage")
    evaluate.add_argument(
        "--out", type=Path, default=None, help="folder for the JSON (default: the run folder)"
    )
    evaluate.add_argument("--figure", type=Path, default=None, help="Fig. 1 overlay PNG to write")
    evaluate.add_argument(
        "--results",
        type=Path,
        default=None,
        help="also write the report here, with the command that made it (e.g. docs/results/)",
    )
    evaluate.add_argument("--fresh", action="store_true", help="ignore a partial evaluation")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=_evaluate)


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def _generate(args: argparse.Namespace) -> int:
    from ..experiments.synthetic import write_scenes

    try:
        folder = write_scenes(
            args.out, args.count, seed=args.seed, split=args.split, start=args.start
        )
    except DenseReadoutError as error:
        return _fail(error)
    print(f"wrote {args.count} scenes to {folder}")
    return 0


def _sheet(args: argparse.Namespace) -> int:
    from ..experiments.synthetic import contact_sheet

    contact_sheet(args.out, tile=args.tile)
    print(f"wrote {args.out}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from ..experiments.synthetic_recipes import RECIPES

    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        print(
            f"{name} {recipe.model} input {recipe.input_size}px, {recipe.train_size} scenes x "
            f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr}"
        )
    return 0


def _overrides(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise DenseReadoutError(f"--set expects FIELD=VALUE, got {pair!r}.")
        key, raw = pair.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def _train(args: argparse.Namespace) -> int:
    from ..experiments.synthetic_recipes import get_recipe
    from ..experiments.synthetic_train import train

    try:
        recipe = get_recipe(args.recipe, **_overrides(args.set))
        history = train(
            recipe,
            args.out,
            resume=not args.fresh,
            progress=not args.no_progress,
            max_epochs=args.max_epochs,
        )
    except DenseReadoutError as error:
        return _fail(error)
    last = history["epochs"][-1] if history["epochs"] else {}
    print(json.dumps({k: v for k, v in last.items() if k.startswith("val_") or k == "epoch"}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..experiments.synthetic_evaluate import evaluate_run

    try:
        report = evaluate_run(
            args.run,
            checkpoint=args.checkpoint,
            split=args.split,
            count=args.count,
            seed=args.seed,
            batch_size=args.batch_size,
            resamples=args.bootstrap,
            level=args.level,
            out=args.out,
            resume=not args.fresh,
            progress=not args.no_progress,
        )
        if args.figure is not None:
            from ..experiments.figures import overlay_grid
            from ..experiments.synthetic_train import load_checkpoint

            model, recipe, _ = load_checkpoint(report.checkpoint)
            overlay_grid(model, recipe, args.figure, split=report.split, seed=report.seed)
    except DenseReadoutError as error:
        return _fail(error)
    print(report.to_json())
    if args.results is not None:
        record = {**json.loads(report.to_json()), "provenance": {"command": _command(args)}}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


# the options of `synthetic evaluate` that change its result, in the order --help lists them
_EVALUATE_OPTIONS = ("checkpoint", "split", "count", "seed", "batch_size", "bootstrap", "level")


def _command(args: argparse.Namespace) -> str:
    """The `synthetic evaluate` command line that reproduces ``args``' report."""
    options = [
        f"--{name.replace('_', '-')} {getattr(args, name)}"
        for name in _EVALUATE_OPTIONS
        if getattr(args, name) is not None
    ]
    return " ".join(["dense-readout synthetic evaluate", str(args.run), *options])


def _figures(args: argparse.Namespace) -> int:
    from ..experiments.figures import overlay_grid, training_curves
    from ..experiments.synthetic_train import load_checkpoint

    out = args.out or args.run
    try:
        model, recipe, payload = load_checkpoint(args.run / args.checkpoint)
    except DenseReadoutError as error:
        return _fail(error)
    curves = out / f"synthetic_{recipe.name}_curves.png"
    overlay = out / f"synthetic_{recipe.name}_overlay.png"
    training_curves(payload["history"], curves)
    overlay_grid(model, recipe, overlay)
    print(f"wrote {curves} and {overlay}")
    return 0
