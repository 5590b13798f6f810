"""The model of ``correspond`` and ``index``: a :class:`~dense_readout.patches.GridExtractor`.

The shared model options (:mod:`dense_readout.commands._model_options`) plus what
only patch commands take: ``--seed`` (of ``--random-weights``, so that an index
built with a random model can be queried with the same one) and ``--input-size``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._model_options import add_model_options, load_model

__all__ = ["add_extractor_options", "load_extractor"]


def add_extractor_options(
    parser: argparse.ArgumentParser, default_from_index: bool = False
) -> None:
    """The model options, ``--seed`` and ``--input-size``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_extractor_options(parser)
        >>> args = parser.parse_args(["--random-weights", "--seed", "3"])
        >>> args.model, args.random_weights, args.seed, args.input_size
        (None, True, 3, None)
    """
    if default_from_index:
        add_model_options(parser, default="the index's model")
    else:
        add_model_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    parser.add_argument(
        "--input-size", type=int, default=None, metavar="PX", help="model input side (crop)"
    )


def load_extractor(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """``(GridExtractor, Preprocess, info)`` for the model options; ``info`` goes in manifests."""
    import torch

    from ..patches import GridExtractor
    from ..preprocessing import Preprocess

    if args.random_weights:
        torch.manual_seed(args.seed)  # the same seed gives the same random model
    loaded = load_model(args)
    preprocess = loaded.preprocess
    if args.input_size:
        preprocess = Preprocess.from_model(
            loaded.model, args.normalization, crop=args.input_size, crop_pct=args.crop_pct
        )
    info = {
        "model": loaded.name,
        "weights": loaded.weights,
        "checkpoint": args.checkpoint,
        "seed": args.seed if args.random_weights else None,
        "class_names": list(loaded.names) if loaded.names else None,
    }
    return GridExtractor(loaded.model), preprocess, info
