"""``dense-readout attack IMAGE``: a PGD attack watched cell by cell (paper A.9, Fig. 11).

Writes into ``--out``: ``<stem>_attack_a_clean.png``, ``<stem>_attack_b_attacked.png``,
``<stem>_attack_c_steps.png`` (Fig. 11 a–c), ``<stem>_attack_grid.gif`` (the label
grid across iterations), ``<stem>_attack.json`` (per step: image top-1, target
probability, share of target cells) and ``<stem>_attack.html`` (Fig. 11 as an offline
page with a step slider, :func:`dense_readout.attacks.page.attack_page`); the summary
line lists every path written. ``IMAGE`` is a file or ``skimage:<name>``.
Without ``--target`` the attack is untargeted (away from the clean prediction).
Exit status 1 if the image cannot be read, 2 for a bad model/option.

Example:
    >>> from dense_readout.cli import main
    >>> main(["attack", "no/such/file.jpg", "--target", "808", "--out", "/tmp/dr-doctest"])
    1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DenseReadoutError, InputError
from ._model_options import add_model_options, check_model_options, load_model
from ._setup import check_output_dir, load_picture

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_EPS",
    "DEFAULT_STEPS",
    "parse_fraction",
    "register",
    "run_attack",
]

# = dense_readout.attacks DEFAULT_STEPS / DEFAULT_EPS / DEFAULT_ALPHA (tested); literals
# here so that --help does not import torch
DEFAULT_STEPS, DEFAULT_EPS, DEFAULT_ALPHA = 20, "8/255", "2/255"


def parse_fraction(text: str) -> float:
    """``"8/255"`` or ``"0.03"`` → float (argparse type).

    Example:
        >>> round(parse_fraction("8/255"), 5), parse_fraction("0.5")
        (0.03137, 0.5)
    """
    from fractions import Fraction

    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number like 8/255 or 0.03, got {text!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``attack`` subcommand."""
    parser = subparsers.add_parser(
        "attack",
        help="PGD attack recorded cell by cell (paper Fig. 11)",
        description="Run an L-inf PGD attack and record the dense readout at every step.",
    )
    parser.add_argument("image", metavar="IMAGE", help="image file, or skimage:<name>")
    parser.add_argument(
        "--target", default=None, help="target class name or id (default: untargeted)"
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"default {DEFAULT_STEPS}")
    parser.add_argument(
        "--eps",
        type=parse_fraction,
        default=DEFAULT_EPS,  # a string: argparse parses it with type=
        help=f"L-inf budget, e.g. 0.03 (default {DEFAULT_EPS})",
    )
    parser.add_argument(
        "--alpha",
        type=parse_fraction,
        default=DEFAULT_ALPHA,
        help=f"step size (default {DEFAULT_ALPHA})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random start")
    parser.add_argument("--no-random-start", action="store_true")
    parser.add_argument("--out", default="dense-readout-attack", metavar="DIR")
    add_model_options(parser, random_weights=False)
    parser.set_defaults(func=run_attack)


def run_attack(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    try:
        _check_budget(args)
        check_model_options(args)
        check_output_dir(args.out)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        photo = load_picture(args.image)
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    import numpy as np
    import torch

    from ..attacks import pgd, resolve_class

    try:
        loaded = load_model(args)
        model, preprocess, names = loaded.model, loaded.preprocess, loaded.class_names
        target = None
        if args.target is not None:
            target = resolve_class(args.target, names, len(names) or None, option="--target")
    except DenseReadoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    picture = preprocess.geometry(photo)
    pixels = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)
    pixels = pixels.permute(2, 0, 1)[None].contiguous()
    try:
        trace = pgd(
            model,
            pixels,
            target=target,
            eps=args.eps,
            alpha=args.alpha,
            steps=args.steps,
            random_start=not args.no_random_start,
            mean=preprocess.mean,
            std=preprocess.std,
            generator=torch.Generator().manual_seed(args.seed),
        )
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    written = _write_outputs(trace, names, args)
    step = int(trace.success_step()[0])
    outcome = f"reached at step {step}" if step >= 0 else f"not reached in {trace.steps} steps"
    print(f"{args.image}: attack {outcome}; wrote {', '.join(str(p) for p in written)}")
    return 0


def _check_budget(args: argparse.Namespace) -> None:
    """The checks of :func:`dense_readout.attacks.pgd`, told before torch and the model load."""
    if not 0 < args.eps <= 1:
        raise InputError(f"--eps must be in (0, 1] (pixel units, e.g. 8/255), got {args.eps}.")
    if not 0 < args.alpha <= 1:
        raise InputError(f"--alpha (step size) must be in (0, 1], e.g. 2/255; got {args.alpha}.")
    if args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}.")


def _write_outputs(trace, names, args: argparse.Namespace) -> list[Path]:
    import torch

    from .._atomic import write_atomic
    from ..attacks.figures import attack_figures, label_grid_animation
    from ..attacks.page import attack_page
    from ..viz import save_png

    out = Path(args.out)
    stem = Path(args.image.split(":", 1)[-1]).stem
    figures = attack_figures(trace, names)
    paths = [
        save_png(figure, out / f"{stem}_attack_{suffix}.png")
        for figure, suffix in zip(figures, ("a_clean", "b_attacked", "c_steps"), strict=True)
    ]
    paths.append(label_grid_animation(trace, out / f"{stem}_attack_grid.gif", names))
    record = attack_record(trace, names)
    record.update(image=args.image, eps=args.eps, alpha=args.alpha, seed=args.seed)
    # pgd runs in float64 by default, so the steps do not depend on the thread count
    record.update(precision="float64", threads=torch.get_num_threads())
    json_path = out / f"{stem}_attack.json"
    json_path.write_text(json.dumps(record, indent=2))
    html_path = write_atomic(out / f"{stem}_attack.html", attack_page(trace, names))
    return [*paths, json_path, html_path]


def attack_record(trace, names) -> dict:
    """JSON-ready per-step summary of image 0 of an :class:`AttackTrace`."""
    target = int(trace.target[0])
    probs = trace.logits[:, 0].softmax(dim=-1)
    predictions = trace.predictions()[:, 0]
    fraction = trace.target_cell_fraction()[:, 0]
    return {
        "targeted": trace.targeted,
        "target": target,
        "target_name": names[target] if names else None,
        "steps": trace.steps,
        "success_step": int(trace.success_step()[0]),
        "exact": trace.exact,
        "max_mean_residual": float(trace.mean_residual.max()),
        "per_step": [
            {
                "step": t,
                "prediction": int(predictions[t]),
                "prediction_name": names[int(predictions[t])] if names else None,
                "target_probability": float(probs[t, target]),
                "target_cell_fraction": float(fraction[t]),
            }
            for t in range(trace.steps + 1)
        ],
    }
