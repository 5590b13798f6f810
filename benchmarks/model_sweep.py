"""Sweep the model zoos through DenseReadout and record one verdict per architecture.

Every model is built with random weights (structure only, nothing downloaded), in
eval mode, and read out on the smallest input it accepts among a few candidates
(64 px, then its own size); verdicts:

* ``exact``: the readout's flag is True and ``mean(Z) == logits`` held on the input
  (relative residual ≤ 1e-4, float32);
* ``not exact``: read out, flag False, with the readout's reason;
* ``refused``: our ``UnsupportedModelError``/``InputError`` with its reason;
* ``raw exception``: anything else (a bug: the goal is zero);
* ``skipped``: over the size rule or the model does not build/run on its own.

Size rule: a model with more than ``--max-params`` parameters (default 100 M,
counted on the meta device before building it) is skipped, so the sweep fits a
CPU. Sources: ``timm.list_models()`` (``--timm all``, or ``--timm families``: one
model per timm module, the smallest by parameter count among its first four names),
every torchvision classification and video builder, and every ``transformers``
``*ForImageClassification`` class with a small config. The JSON is rewritten
after each model and a rerun skips what it holds (resumable; Ctrl-C is safe).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/model_sweep.py --timm families
    python benchmarks/model_sweep.py --write-docs   # docs/models.md from the JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "model_sweep.json"
DOCS = ROOT / "docs" / "models.md"
BEGIN, END = "<!-- model-sweep:begin -->", "<!-- model-sweep:end -->"

Builder = Callable[[], nn.Module]


# -- the zoos ----------------------------------------------------------------------------
def timm_models(which: str) -> Iterator[tuple[str, str, Builder]]:
    """``(name, family, builder)`` for timm: every architecture or one per module."""
    import timm
    from timm.models._registry import _model_to_module

    names = timm.list_models()
    if which == "families":
        by_module: dict[str, list[str]] = {}
        for name in names:
            by_module.setdefault(_model_to_module.get(name, "?"), []).append(name)
        names = [_smallest(models[:4]) for models in by_module.values()]
    for name in names:
        family = _model_to_module.get(name, "?")
        yield (
            f"timm/{name}",
            f"timm.{family}",
            lambda name=name: timm.create_model(name, pretrained=False, num_classes=5),
        )


def _smallest(names: list[str]) -> str:
    counts = {name: _meta_params(lambda n=name: _timm_create(n)) for name in names}
    return min(names, key=lambda n: (counts[n] if counts[n] is not None else 1e18, n))


def _timm_create(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=5)


def torchvision_models() -> Iterator[tuple[str, str, Builder]]:
    """Every torchvision classification and video builder, ``num_classes=5``."""
    import torchvision.models as tvm

    for module, prefix in ((tvm, "torchvision"), (tvm.video, "torchvision.video")):
        for name in tvm.list_models(module=module):
            kwargs: dict[str, Any] = {"weights": None, "num_classes": 5}
            if name.startswith(("inception", "googlenet")):
                kwargs["aux_logits"], kwargs["init_weights"] = False, True
            yield f"{prefix}/{name}", prefix, lambda n=name, k=kwargs: tvm.get_model(n, **k)


def transformers_models() -> Iterator[tuple[str, str, Builder]]:
    """Every ``transformers`` ``*ForImageClassification`` class with a shrunken config."""
    import transformers

    for name in sorted(n for n in dir(transformers) if n.endswith("ForImageClassification")):
        stem = name[: -len("ForImageClassification")]
        config_class = getattr(transformers, f"{stem}Config", None)
        if config_class is None:
            continue
        yield f"transformers/{name}", "transformers", lambda n=name, c=config_class: _hf(n, c)


_SMALL = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "embed_dim": 16,
}


def _hf(name: str, config_class: type) -> nn.Module:
    import transformers

    model_class = getattr(transformers, name)
    try:
        config = config_class(num_labels=5, **_SMALL)
        return model_class(config)
    except Exception:  # a family whose config rejects the small sizes: its defaults
        return model_class(config_class(num_labels=5))


# -- one model ---------------------------------------------------------------------------
def _meta_params(build: Builder) -> int | None:
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(p.numel() for p in build().parameters())
    except Exception:
        return None


def _inputs(model: nn.Module, adapter_dims: int) -> Iterator[torch.Tensor]:
    """Candidate inputs, smallest first: 64 px, the model's own size, 224 px."""
    channels = 3
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if first is not None and first.in_channels in (1, 3, 4):
        channels = first.in_channels
    cfg = getattr(model, "pretrained_cfg", None) or {}
    config = getattr(model, "config", None)
    sizes = [64, *([cfg["input_size"][-1]] if cfg.get("input_size") else [])]
    if config is not None and isinstance(getattr(config, "image_size", None), int):
        sizes.append(config.image_size)
    sizes.append(224)
    for size in dict.fromkeys(sizes):
        if adapter_dims == 3:
            yield torch.randn(1, channels, 16, size, size)
        else:
            yield torch.randn(1, channels, size, size)


def _runs(model: nn.Module, x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            model(x)
    except Exception:
        return False
    return True


def sweep_one(build: Builder, max_params: float = 100e6) -> dict[str, Any]:
    """Build one model and read it out; the verdict record (never raises)."""
    from dense_readout import DenseReadout
    from dense_readout.errors import DenseReadoutError

    params = _meta_params(build)
    if params is not None and params > max_params:
        return {"verdict": "skipped", "reason": f"{params / 1e6:.0f} M parameters > size rule"}
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build().eval()
    except Exception as error:
        return {"verdict": "skipped", "reason": f"does not build: {type(error).__name__}"}
    dims = 3 if any(isinstance(m, nn.Conv3d) for m in model.modules()) else 2
    x = next((x for x in _inputs(model, dims) if _runs(model, x)), None)
    if x is None:
        return {"verdict": "skipped", "reason": "the model itself did not run on 64/224 px"}
    record: dict[str, Any] = {"input": list(x.shape[1:])}
    try:
        result = DenseReadout(model)(x)
    except DenseReadoutError as error:
        return {**record, "verdict": "refused", "reason": _first_sentence(str(error))}
    except Exception as error:
        return {**record, "verdict": "raw exception", "reason": f"{type(error).__name__}: {error}"}
    residual = float(result.residual.max())
    exact = result.exact and residual <= 1e-4
    return {
        **record,
        "verdict": "exact" if exact else "not exact",
        "adapter": result.adapter,
        "grid": list(result.grid_size),
        "residual": residual,
        "reason": "" if exact else result.exactness_note,
    }


def _first_sentence(text: str) -> str:
    # the reason, without the generic "pass features=/head=" advice every refusal ends with
    for marker in (" Its head cannot be applied", " Pass DenseReadout", " pass DenseReadout"):
        text = text.split(marker)[0]
    return " ".join(text.split())[:300]


# -- the sweep ---------------------------------------------------------------------------
def _load(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"models": {}}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: an interrupted run leaves the last complete file


def _provenance(args: argparse.Namespace) -> dict[str, Any]:
    import timm
    import torchvision
    import transformers

    return {
        "command": " ".join(shlex.quote(p) for p in ["python", *sys.argv]),
        "max_params": args.max_params,
        "timm_selection": args.timm,
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    data = _load(args.out)
    data.update(_provenance(args))
    # every run that added to the file, in order (the sweep is resumed across runs)
    data["commands"] = [*data.get("commands", []), data["command"]]
    zoos = []
    if args.timm != "none":
        zoos.append(timm_models(args.timm))
    if not args.no_torchvision:
        zoos.append(torchvision_models())
    if not args.no_transformers:
        zoos.append(transformers_models())
    todo = [
        item
        for zoo in zoos
        for item in zoo
        if item[0] not in data["models"] and (not args.only or args.only in item[0])
    ]
    for name, family, build in tqdm(todo[: args.limit or None], desc="models"):
        start = time.perf_counter()
        record = sweep_one(build, args.max_params)
        record.update(family=family, seconds=round(time.perf_counter() - start, 1))
        data["models"][name] = record
        _save(args.out, data)
    return data


# -- the docs table ----------------------------------------------------------------------
def docs_table(data: dict[str, Any]) -> str:
    """The Markdown verdict table, one row per family and verdict and reason."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for name, record in sorted(data["models"].items()):
        reason = _short_reason(record.get("reason", ""))
        key = (record["family"], record["verdict"], reason)
        rows.setdefault(key, []).append(name.split("/", 1)[1])
    counts: dict[str, int] = {}
    for record in data["models"].values():
        counts[record["verdict"]] = counts.get(record["verdict"], 0) + 1
    summary = ", ".join(f"{verdict}: {count}" for verdict, count in sorted(counts.items()))
    lines = [
        f"{len(data['models'])} architectures ({summary}).",
        "",
        "| family | verdict | models | why |",
        "|---|---|---|---|",
    ]
    for (family, verdict, reason), names in sorted(rows.items()):
        shown = ", ".join(f"`{n}`" for n in names[:4]) + (
            f" (+{len(names) - 4})" if len(names) > 4 else ""
        )
        lines.append(f"| {family} | {verdict} | {shown} | {reason} |")
    return "\n".join(lines)


def _short_reason(reason: str) -> str:
    text = reason.replace("|", "/").replace("\n", " ")
    for marker in (" (classifier found:", ", so Z is", ", so mean(Z)"):
        if marker in text and marker != " (classifier found:":
            text = text.split(marker)[0]
    if " (classifier found:" in text:  # keep the reason after the head's repr
        head, _, rest = text.partition(" (classifier found:")
        text = head + (":" + rest.split("):", 1)[1] if "):" in rest else "")
    return text[:220]


def write_docs(data: dict[str, Any], path: Path = DOCS) -> None:
    text = path.read_text()
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    path.write_text(f"{before}{BEGIN}\n{docs_table(data)}\n{END}{after}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm", choices=["all", "families", "none"], default="families")
    parser.add_argument("--no-torchvision", action="store_true")
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--only", default="", help="only models whose name contains this")
    parser.add_argument("--limit", type=int, default=0, help="at most this many new models")
    parser.add_argument("--max-params", type=float, default=100e6)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--write-docs", action="store_true", help="only rewrite docs/models.md")
    args = parser.parse_args(argv)
    if args.write_docs:
        write_docs(_load(args.out))
        return
    with contextlib.suppress(KeyboardInterrupt):
        data = run(args)
        raw = [n for n, r in data["models"].items() if r["verdict"] == "raw exception"]
        print(f"{len(data['models'])} models; raw exceptions: {len(raw)} {raw[:10]}")


if __name__ == "__main__":
    main()
