"""``dense-readout index build|query|merge|map``: a searchable index of every cell of a dataset.

* ``index build --root DIR --out INDEX``: every image under ``DIR`` (recursively)
  through the model, one L2-normalised vector per cell, then a FAISS index
  (``--index flat`` exact, ``ivf-pq`` compressed). Resumable: rerun the same command
  after a kill. Under ``python -m torch.distributed.run --nproc_per_node N -m
  dense_readout.cli index build ...`` each process extracts every N-th image and
  rank 0 merges.
* ``index query INDEX --image IMG [--cell u,v | --box x0,y0,x1,y1] -k 20 --out DIR``:
  ``<stem>_query.json`` and ``<stem>_query.png`` (contact sheet).
* ``index merge INDEX [--index ivf-pq]``: rebuild the FAISS index from the shards.
* ``index map INDEX --out map.html [--sample N]``: the interactive UMAP page.

Example:
    >>> from dense_readout.cli import main
    >>> main(["index", "query", "/no/such/index", "--image", "skimage:coffee"])
    2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import DenseReadoutError, ImageLoadError, InputError
from ._extractor import add_extractor_options, load_extractor
from ._model_options import check_model_options
from ._setup import check_output_dir, expand_inputs, load_picture

__all__ = ["INDEX_KINDS", "parse_ints", "register"]

INDEX_KINDS = ("flat", "ivf-pq")  # = dense_readout.patches.index_merge.INDEX_KINDS (tested)


def parse_ints(count: int):
    """An argparse type: ``"a,b"`` → a tuple of ``count`` ints.

    Example:
        >>> parse_ints(2)("3, 4")
        (3, 4)
    """

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(float(part)) for part in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers: {text!r}")
        return values

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``index`` with its ``build``, ``query``, ``merge`` and ``map`` subcommands."""
    index = subparsers.add_parser("index", help="searchable patch index of a dataset (FAISS)")
    commands = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = commands.add_parser("build", help="extract every cell of every image, build the index")
    build.add_argument("--root", required=True, metavar="DIR", help="folder of images (recursive)")
    build.add_argument("--out", required=True, metavar="INDEX", help="index folder")
    build.add_argument("--index", choices=INDEX_KINDS, default="flat")
    build.add_argument("--batch-size", type=int, default=32)
    _add_ivf_options(build)
    build.add_argument("--no-progress", action="store_true")
    add_extractor_options(build)
    build.set_defaults(func=run_build)

    merge = commands.add_parser("merge", help="(re)build the FAISS index from the shards")
    merge.add_argument("index_dir", metavar="INDEX")
    merge.add_argument("--index", choices=INDEX_KINDS, default=None, help="default: as built")
    _add_ivf_options(merge)
    merge.set_defaults(func=run_merge)

    query = commands.add_parser("query", help="nearest patches of a cell or box of an image")
    query.add_argument("index_dir", metavar="INDEX")
    query.add_argument("--image", required=True, help="image file, or skimage:<name>")
    where = query.add_mutually_exclusive_group()
    where.add_argument("--cell", type=parse_ints(2), default=None, metavar="U,V")
    where.add_argument("--box", type=parse_ints(4), default=None, metavar="X0,Y0,X1,Y1")
    query.add_argument("-k", type=int, default=20, help="patches retrieved (default 20)")
    query.add_argument("--nprobe", type=int, default=None, help="IVF lists searched")
    query.add_argument("--out", default="dense-readout-query", metavar="DIR")
    add_extractor_options(query, default_from_index=True)
    query.set_defaults(func=run_query)

    page = commands.add_parser("map", help="interactive UMAP page of a sample of the cells")
    page.add_argument("index_dir", metavar="INDEX")
    page.add_argument("--out", default="patch_map.html", metavar="HTML")
    page.add_argument("--sample", type=int, default=2000, help="cells drawn (default 2000)")
    page.add_argument("--neighbours", type=int, default=8, help="listed per point")
    page.add_argument("--seed", type=int, default=0)
    page.set_defaults(func=run_map)


def _add_ivf_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4·sqrt(n))")
    parser.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantisers")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF lists searched by default")


def _ivf_options(args: argparse.Namespace) -> dict:
    return {"nlist": args.nlist, "pq_m": args.pq_m, "nprobe": args.nprobe}


def _fail(error: Exception, status: int = 2) -> int:
    print(f"error: {error}", file=sys.stderr)
    return status


def run_build(args: argparse.Namespace) -> int:
    """Run ``index build``; returns the exit status."""
    try:
        if not Path(args.root).is_dir():
            raise InputError(f"--root {args.root}: not a folder.")
        if args.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {args.batch_size}.")
        check_model_options(args)
        check_output_dir(args.out)
        paths = [path for path, error in expand_inputs([args.root]) if error is None]
        from ..patches import build_index

        extractor, preprocess, info = load_extractor(args)
        manifest = build_index(
            paths,
            args.out,
            extractor,
            preprocess,
            model_name=info.pop("model"),
            batch_size=args.batch_size,
            index=args.index,
            class_names=info.pop("class_names"),
            model_info={**info, "root": str(args.root)},
            progress=not args.no_progress,
            merge_options=_ivf_options(args),
        )
    except DenseReadoutError as error:
        return _fail(error)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torch.distributed.run: one summary line, from rank 0
    counts = manifest["counts"]
    print(
        f"{args.out}: {counts['vectors']} vectors of {counts['indexed']} images "
        f"({counts['skipped']} skipped), {manifest['index']} index, grid "
        f"{manifest['grid'][0]}x{manifest['grid'][1]}, dim {manifest['dim']}"
    )
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """Run ``index merge``; returns the exit status."""
    from ..patches import merge_index
    from ..patches.index_store import IndexLayout, read_json

    try:
        kind = args.index
        if kind is None:
            manifest = IndexLayout(args.index_dir).manifest
            kind = read_json(manifest, "manifest")["index"] if manifest.exists() else "flat"
        result = merge_index(args.index_dir, index=kind, **_ivf_options(args))
    except DenseReadoutError as error:
        return _fail(error)
    print(f"{args.index_dir}: {result['counts']['vectors']} vectors, {kind} index")
    return 0


def run_query(args: argparse.Namespace) -> int:
    """Run ``index query``; returns the exit status."""
    from .._atomic import write_atomic
    from ..patches import PatchIndex, contact_sheet, query_image
    from ..preprocessing import Preprocess

    try:
        if args.k < 1:
            raise InputError(f"-k must be >= 1, got {args.k}.")
        check_model_options(args)
        check_output_dir(args.out)
        index = PatchIndex.open(args.index_dir)
        same_preprocessing = _defaults_from_index(args, index.manifest)
        index.check_model(args.model, (args.input_size, args.input_size))  # before loading it
        extractor, preprocess, info = load_extractor(args)
        if same_preprocessing:
            preprocess = Preprocess(**index.manifest["preprocessing"])
    except DenseReadoutError as error:
        return _fail(error)
    try:
        picture = load_picture(args.image)
    except ImageLoadError as error:
        return _fail(error, 1)
    try:
        result = query_image(
            index,
            extractor,
            preprocess,
            picture,
            cell=args.cell,
            box=args.box,
            k=args.k,
            model_name=info["model"],
            nprobe=args.nprobe,
        )
    except DenseReadoutError as error:
        return _fail(error)
    result.path = args.image
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image.split(":", 1)[-1]).stem
    json_path = write_atomic(out / f"{stem}_query.json", json.dumps(result.to_dict(), indent=1))
    sheet_path = out / f"{stem}_query.png"
    sheet = contact_sheet(result, picture=picture)
    sheet.save(sheet_path)
    first = result.hits[0] if result.hits else None
    best = f"best {first.path} cell {first.cell} ({first.similarity:.3f})" if first else "no hits"
    print(
        f"{args.image} cells {result.cells}: {len(result.hits)} hits, {best}; wrote "
        f"{json_path}, {sheet_path}"
    )
    return 0


def _defaults_from_index(args: argparse.Namespace, manifest: dict) -> bool:
    """Fill in the index's model, weights and seed, and input size, where not given.

    Without ``--input-size`` the index's input size, and True: use the index's
    preprocessing exactly.
    """
    if args.model is None:
        args.model = manifest["model"]
        args.checkpoint = args.checkpoint or manifest.get("checkpoint")
        if manifest.get("weights") == "random":
            args.random_weights = True
            args.seed = int(manifest.get("seed") or 0)
    if args.input_size is None:
        args.input_size = int(manifest["input_size"][0])
        return True
    return False


def run_map(args: argparse.Namespace) -> int:
    """Run ``index map``; returns the exit status."""
    from ..patches import PatchIndex, write_index_map

    try:
        index = PatchIndex.open(args.index_dir)
        path = write_index_map(
            index, args.out, sample=args.sample, neighbours=args.neighbours, seed=args.seed
        )
    except DenseReadoutError as error:
        return _fail(error)
    size = path.stat().st_size / 1e6
    print(
        f"{args.index_dir}: map of {min(args.sample, index.size)} cells; wrote {path} "
        f"({size:.1f} MB)"
    )
    return 0
