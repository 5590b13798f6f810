"""The model options of every command, declared once, and the one way to load the model.

``add_model_options(parser)`` adds ``--model``, ``--checkpoint``, ``--normalization``,
``--crop-pct`` and (where outputs can say so) ``--random-weights``;
:func:`check_model_options` validates them without importing torch (the commands
call it before anything slow), :func:`load_model` then loads the model, checking
a mistyped timm name first (``did you mean resnet50?``). Importing this module
imports neither torch nor timm.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CheckpointError, InputError

__all__ = [
    "LoadedModel",
    "add_model_options",
    "check_model_name",
    "check_model_options",
    "load_model",
]

DEFAULT_MODEL = "tf_efficientnet_lite0"  # = dense_readout.pretrained.DEFAULT_MODEL (tested)


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    random_weights: bool = True,
    crop_pct: bool = True,
    default: str = f"{DEFAULT_MODEL}, embedded ImageNet weights",
) -> None:
    """Add the model options to ``parser`` (one argument group, ``model``).

    ``random_weights=False`` for commands whose outputs cannot say that the weights
    are random; ``crop_pct=False`` where the command sets its own crop (``bench``).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_model_options(parser)
        >>> args = parser.parse_args(["--model", "resnet18", "--random-weights"])
        >>> args.model, args.checkpoint, args.random_weights, args.normalization, args.crop_pct
        ('resnet18', None, True, 'model', 1.0)
    """
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help=f"timm architecture name, or hf:DIR (default: {default}); "
        "other timm models need --checkpoint",
    )
    group.add_argument(
        "--checkpoint", default=None, metavar="PATH", help="local state-dict file for --model"
    )
    group.add_argument(
        "--normalization",
        choices=("model", "imagenet"),
        default="model",
        help="input mean/std: the model's own (default) or ImageNet's",
    )
    if crop_pct:
        group.add_argument(
            "--crop-pct",
            type=float,
            default=1.0,
            metavar="F",
            help="centre-crop fraction: 1.0 (default) keeps the most of the photo; "
            "0.875 is the paper's 256→224",
        )
    if random_weights:
        group.add_argument(
            "--random-weights",
            action="store_true",
            help="any timm architecture with random weights, no checkpoint (outputs say so)",
        )


def check_model_options(args: argparse.Namespace) -> None:
    """The checks that need no model and no torch.

    Raises :class:`InputError` / :class:`CheckpointError` naming the option and the fix.

    Example:
        >>> check_model_options(argparse.Namespace(crop_pct=1.5))
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: --crop-pct must be in (0, 1], got 1.5.
    """
    crop_pct = getattr(args, "crop_pct", 1.0)
    if not 0 < crop_pct <= 1:
        raise InputError(f"--crop-pct must be in (0, 1], got {crop_pct}.")
    checkpoint = getattr(args, "checkpoint", None)
    if getattr(args, "random_weights", False) and checkpoint is not None:
        raise InputError("--random-weights and --checkpoint exclude each other; give one.")
    if checkpoint is not None and not Path(checkpoint).is_file():
        what = "is a folder, not a file" if Path(checkpoint).is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {checkpoint} {what}; pass a state-dict file.")


def check_model_name(name: str) -> None:
    """Raise :class:`CheckpointError` if ``name`` is no timm architecture, naming the closest.

    The closest names come from ``difflib`` over ``timm.list_models()``; ``hf:DIR`` passes.

    Example:
        >>> check_model_name("resnet50")
        >>> check_model_name("resnet5O")
        Traceback (most recent call last):
        ...
        dense_readout.errors.CheckpointError: unknown timm model 'resnet5O'; did you mean resnet50? (other close names: resnet51q, resnet50t)
    """
    from ..pretrained import HF_PREFIX

    if name.startswith(HF_PREFIX):
        return
    import difflib

    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    if not close:
        hint = "no timm name is close; timm.list_models() lists them all."
    else:
        hint = f"did you mean {close[0]}?"
        if len(close) > 1:
            hint += f" (other close names: {', '.join(close[1:])})"
    raise CheckpointError(f"unknown timm model {name!r}; {hint}")


class LoadedModel(NamedTuple):
    """The model and what goes with it: preprocessing, names, how the weights came.

    ``names`` are the class names when they mean something (ImageNet, or a Hugging
    Face ``id2label``), else None; ``class_names`` always has one entry per class
    (``"class 7"`` for unnamed ones).
    """

    model: Any
    preprocess: Any
    names: tuple[str, ...] | None
    name: str
    weights: str  # "embedded", "checkpoint" or "random"
    class_names: tuple[str, ...] = ()


def load_model(args: argparse.Namespace) -> LoadedModel:
    """The model ``--model``/``--checkpoint``/``--random-weights`` ask for, in eval mode.

    Runs :func:`check_model_options` and :func:`check_model_name` first, so a typo or
    a missing file is reported before anything is built.
    """
    from ..imagenet import imagenet_class_names
    from ..pretrained import EMBEDDED_WEIGHTS, HF_PREFIX, load_pretrained

    check_model_options(args)
    name = args.model or DEFAULT_MODEL
    check_model_name(name)
    normalization = getattr(args, "normalization", "model")
    crop_pct = getattr(args, "crop_pct", 1.0)
    if getattr(args, "random_weights", False):
        model, preprocess, names = _random_model(name, normalization, crop_pct)
        weights = "random"
    else:
        hf = name.startswith(HF_PREFIX)  # hf:DIR carries its weights (dense_readout.pretrained)
        if args.checkpoint is None and name not in EMBEDDED_WEIGHTS and not hf:
            raise CheckpointError(
                f"--model {name} needs --checkpoint PATH (a local state-dict file): only "
                f"{', '.join(sorted(EMBEDDED_WEIGHTS))} ship with weights, and nothing is "
                f"downloaded (or try the architecture with --random-weights)."
            )
        model, preprocess, names, name = load_pretrained(
            name, args.checkpoint, normalization=normalization, crop_pct=crop_pct
        )
        weights = "embedded" if args.checkpoint is None else "checkpoint"
    imagenet = tuple(names) == imagenet_class_names()
    labelled = imagenet or name.startswith(HF_PREFIX)  # hf:DIR: names from config.id2label
    classes = int(getattr(model, "num_classes", 0) or len(names))
    every = tuple(names) if names else tuple(f"class {i}" for i in range(classes))
    return LoadedModel(model, preprocess, tuple(names) if labelled else None, name, weights, every)


def _random_model(name: str, normalization: str, crop_pct: float) -> tuple[Any, Any, tuple]:
    import timm

    from ..imagenet import imagenet_class_names
    from ..preprocessing import Preprocess

    try:
        model = timm.create_model(name, pretrained=False).eval()
    except RuntimeError as error:  # timm raises RuntimeError for unknown names
        raise CheckpointError(f"Unknown timm model {name!r}: {error}") from None
    preprocess = Preprocess.from_model(model, normalization, crop_pct=crop_pct)
    classes = int(getattr(model, "num_classes", 0))
    return model, preprocess, imagenet_class_names() if classes == 1000 else ()
