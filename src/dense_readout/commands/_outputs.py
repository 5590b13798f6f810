"""One image through ``explain``: the view, the readout, and its files (each written atomically).

Per image, into ``--out``: ``<stem>_labels.png``, ``<stem>_heatmap.png``,
``<stem>_class<K>.png`` per ``--class``, ``<stem>.html`` with ``--html`` and
``<stem>.json`` last. Every file is written to a temporary name and renamed, and
:class:`Written` remembers them so that an interrupted image can be removed whole.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .._atomic import write_atomic
from ..images import ImageWarning, crop_region, full_view, upsampling_note
from ._record import dumps, explanation_record, summary
from ._setup import Source

__all__ = ["Job", "Written", "explain_one"]


@dataclass
class Written:
    """Files written so far, and those of the image in progress."""

    done: list[Path] = field(default_factory=list)
    current: list[Path] = field(default_factory=list)

    def add(self, path: Path) -> Path:
        self.current.append(path)
        return path

    def finish(self) -> None:
        self.done += self.current
        self.current = []

    def discard_current(self) -> list[Path]:
        """Remove the unfinished image's files; return them."""
        removed, self.current = self.current, []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


@dataclass
class Job:
    """What every image of a run shares."""

    readout: Any
    loaded: Any  # commands._setup.LoadedModel
    args: Any
    out: Path
    device: torch.device
    classes: Sequence[int] = ()
    methods: Sequence[str] = ()


def _view(image: Image.Image, job: Job) -> tuple[Image.Image, list[float], str | None]:
    """The model's input picture, its region in the photo, and an upsampling note."""
    preprocess = job.loaded.preprocess
    size = preprocess.crop if job.args.view == "full" else preprocess.resize
    note = upsampling_note(image, size)
    if job.args.view == "full":
        picture = full_view(image, preprocess.crop)
        return picture, [0.0, 0.0, float(image.width), float(image.height)], note
    box = [float(v) for v in crop_region(image.size, preprocess.resize, preprocess.crop)]
    return preprocess.geometry(image), box, note


def explain_one(source: Source, job: Job, written: Written) -> str:
    """Explain one image, write its files, return its summary line."""
    image = source.load()
    picture, region, note = _view(image, job)
    notes = [note] if note else []
    if note:
        warnings.warn(f"{source.name}: {note}", ImageWarning, stacklevel=2)
    batch = job.loaded.preprocess.normalize(picture).unsqueeze(0).to(job.device)
    result = job.readout(batch).to("cpu")
    record = _record(source, image, result, job, region, notes)
    files = _figures(source, picture, image, region, result, job, written)
    comparisons = _comparisons(batch, result, job, notes) if job.methods else []
    if job.args.html:
        page = _page(source, image, region, result, job, comparisons, notes)
        files["page"] = write_atomic(written.add(job.out / f"{source.stem}.html"), page).name
    record["files"] = files
    record["comparisons"] = {c.method: c.seconds for c in comparisons}
    json_path = write_atomic(written.add(job.out / f"{source.stem}.json"), dumps(record))
    return summary(source.name, record, [str(json_path)] + [str(job.out / f) for f in _flat(files)])


def _flat(files: dict) -> list[str]:
    return [n for v in files.values() for n in (v.values() if isinstance(v, dict) else [v])]


def _record(source, image, result, job: Job, region, notes: list[str]) -> dict:
    args, preprocess = job.args, job.loaded.preprocess
    record = explanation_record(result, job.loaded.names, topk=args.topk)
    return {
        "image": source.name,
        "original_size": [image.height, image.width],
        "model": job.loaded.name,
        "checkpoint": args.checkpoint,
        "weights": job.loaded.weights,
        "device": str(job.device),
        "view": args.view,
        "region": [round(v, 2) for v in region],
        "preprocessing": {
            "normalization": args.normalization,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "resize_shorter_side": preprocess.crop if args.view == "full" else preprocess.resize,
            "centre_crop": None if args.view == "full" else preprocess.crop,
        },
        **record,
        "warnings": notes,
    }


def _figures(source, picture, image, region, result, job: Job, written: Written) -> dict:
    """The label grid, the top-1 heatmap and one heatmap per ``--class``."""
    if job.args.no_png:
        return {}
    from ..viz import add_photo_inset, plot_heatmap, readout_figures, save_png
    from ..viz._common import _name_of

    names, stem = job.loaded.names, source.stem
    title = (source.title or stem) + (" · RANDOM WEIGHTS" if job.loaded.weights == "random" else "")
    grid_figure, heat_figure = readout_figures(result, picture, names, name=title)
    if job.args.view == "crop":
        add_photo_inset(grid_figure, image, region)
    files: dict[str, Any] = {
        "label_grid": save_png(grid_figure, written.add(job.out / f"{stem}_labels.png")).name,
        "heatmap": save_png(heat_figure, written.add(job.out / f"{stem}_heatmap.png")).name,
    }
    classes = {}
    for k in job.classes:
        figure = plot_heatmap(
            picture,
            result.class_map(k)[0],
            title=f"{title} · evidence for {_name_of(k, names)} ({k})",
            value_label=f"Z[{k}] per cell (logit units)",
        )
        classes[str(k)] = save_png(figure, written.add(job.out / f"{stem}_class{k}.png")).name
    if classes:
        files["classes"] = classes
    return files


def _comparisons(batch: torch.Tensor, result, job: Job, notes: list[str]) -> list:
    """``--compare`` maps of the image's top-5 classes (one batch of 5), with times."""
    from ..compare import compare
    from ..page import PageComparison

    top = torch.softmax(result.logits[0], 0).argsort(descending=True)[:5]
    height, width = batch.shape[-2:]
    outcome = compare(
        job.readout.model,
        batch.expand(len(top), -1, -1, -1),
        targets=top,
        methods=["dense-readout", *job.methods],
        size=(-(-height // 4), -(-width // 4)),
        readout=job.readout,
    )
    for method, reason in outcome.failures.items():
        notes.append(f"{method} failed: {reason}")
    return [
        PageComparison(method, int(k), maps[i].cpu().numpy(), outcome.seconds[method], len(top))
        for method, maps in outcome.maps.items()
        for i, k in enumerate(top.tolist())
    ]


def _page(source, image, region, result, job: Job, comparisons, notes) -> str:
    from ..page import readout_page

    loaded = job.loaded
    return readout_page(
        result,
        image,
        loaded.names,
        region=region,
        title=source.title or source.stem,
        model=loaded.name,
        random_weights=loaded.weights == "random",
        comparisons=comparisons,
        initial_class=job.classes[0] if job.classes else None,
        notes=notes,
        view="whole photo" if job.args.view == "full" else "centre crop (outlined)",
    )
