"""Quantus localisation metrics of the dense readout, Grad-CAM and LayerGradCam on ILSVRC boxes.

The embedded EfficientNet-Lite0 (``load_pretrained()``), the ILSVRC2012 val sample
(``<root>/ilsvrc_val_sample``), the paper's preprocessing (shorter side 256, centre
crop 224, the model's mean/std) and the union of the ground-truth boxes mapped
through the same resize and crop as the mask (``dense_readout.evaluation``); the
target is the ground-truth class. Images: ``--limit`` evenly spaced over the
sorted file list; images with no box inside the crop are skipped (counted).

Each method's maps come from one ``explain_func(model, inputs, targets, **kwargs)``
call per batch and go to the Quantus metrics as ``a_batch`` (with their default
settings: normalise by max; ``abs`` only for AttributionLocalisation), and to
``dense_readout.localization`` for an agreement check (largest |Quantus − ours|):

* ``dense readout``: ``dense_readout.quantus.explain`` (``Z_k``, signed, bilinear);
* ``dense readout, ReLU``: the same with ``relu=True``;
* ``Grad-CAM``: pytorch-grad-cam ``GradCAM`` at the same grid layer (ReLU, min–max);
* ``LayerGradCam``: ``quantus.explain(method="LayerGradCam", gc_layer=<grid layer>,
  interpolate=(224, 224), interpolate_mode="bilinear")`` (Captum, signed).

    python benchmarks/quantus_ilsvrc.py ../shared/data --limit 200 --batch 8
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

METRICS = {
    "PointingGame": ("PointingGame", "pointing_game"),
    "RelevanceMassAccuracy": ("RelevanceMassAccuracy", "relevance_mass"),
    "AttributionLocalisation": ("AttributionLocalisation", "attribution_localisation"),
    "RelevanceRankAccuracy": ("RelevanceRankAccuracy", "relevance_rank"),
}


def explain_funcs(model, layer):
    """``{row label: (explain_func, kwargs)}``."""
    import quantus
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from dense_readout.quantus import explain

    def gradcam(model, inputs, targets, **kwargs):
        with GradCAM(model, [layer]) as cam:
            x = torch.from_numpy(np.asarray(inputs))
            maps = cam(x, [ClassifierOutputTarget(int(k)) for k in targets])
        return maps[:, None].astype(np.float32)

    size = (224, 224)
    return {
        "dense readout": (explain, {"method": "DenseReadoutAttribution"}),
        "dense readout, ReLU": (explain, {"method": "DenseReadoutAttribution", "relu": True}),
        "Grad-CAM (pytorch-grad-cam)": (gradcam, {}),
        "LayerGradCam (quantus.explain)": (
            quantus.explain,
            {
                "method": "LayerGradCam",
                "gc_layer": layer,
                "interpolate": size,
                "interpolate_mode": "bilinear",
            },
        ),
    }


def load_batch(dataset, protocol, indices, skipped):
    from dense_readout import load_image
    from dense_readout.errors import DatasetError, ImageLoadError

    images, masks, labels = [], [], []
    for index in indices:
        try:
            sample = dataset[int(index)]
            image = load_image(sample.path)
        except (DatasetError, ImageLoadError) as error:
            skipped[type(error).__name__] += 1
            continue
        tensor, mask = protocol.transform(image, sample.boxes)
        if not mask.any():
            skipped["no_box_in_crop"] += 1
            continue
        images.append(tensor.numpy())
        masks.append(mask.numpy()[None].astype(np.float32))
        labels.append(sample.label)
    return images, masks, labels


def score_batch(model, x, y, s, funcs, results, seconds):
    import quantus

    from dense_readout import localization

    for label, (func, kwargs) in funcs.items():
        started = time.perf_counter()
        a = func(model, x, y, **kwargs)
        seconds[label] += time.perf_counter() - started
        for name, (metric_name, ours_name) in METRICS.items():
            metric = getattr(quantus, metric_name)(disable_warnings=True)
            theirs = np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s))
            ours = localization.MASK_METRICS.get(ours_name)(a[:, 0], s[:, 0])
            results[label][name].extend(theirs.tolist())
            both = ~np.isnan(theirs) & ~np.isnan(ours)
            gap = float(np.abs(theirs[both] - ours[both]).max()) if both.any() else 0.0
            results[label]["agreement"].append(gap)


def summarise(results, seconds, images: int) -> dict:
    """Per method: mean score in % per metric (NaNs counted), agreement, s / image."""
    methods = {}
    for label, scores in results.items():
        row: dict = {"scores": {}, "nan": {}}
        for name in METRICS:
            values = np.asarray(scores[name], dtype=np.float64)
            finite = values[~np.isnan(values)]
            row["scores"][name] = float(100 * finite.mean()) if finite.size else None
            row["nan"][name] = int(values.size - finite.size)
        agreement = scores["agreement"]
        row["max_abs_quantus_minus_ours"] = max(agreement) if agreement else None
        row["seconds_per_image"] = seconds[label] / images
        methods[label] = row
    return methods


def markdown_table(data: dict) -> str:
    """The docs' table from the ``--results`` JSON."""
    head = "| method | " + " | ".join(METRICS) + " | max abs(Quantus − ours) | s / image |"
    lines = [head, "|---" * (len(METRICS) + 3) + "|"]
    for label, row in data["methods"].items():
        cells = [
            f"{row['scores'][name]:.1f}"
            + (f" ({row['nan'][name]} NaN)" if row["nan"][name] else "")
            for name in METRICS
        ]
        gap = row["max_abs_quantus_minus_ours"]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {gap:.1e} | {row['seconds_per_image']:.3f} |"
        )
    return "\n".join(lines)


def command_block(data: dict) -> str:
    """The command that wrote the JSON, as the docs show it."""
    return f"```bash\n{data['provenance']['command']}\n```"


def header_line(data: dict) -> str:
    """The docs' sentence on what was measured, from the ``--results`` JSON."""
    return (
        f"N = {data['images']} images (--limit {data['limit']}, evenly spaced over "
        f"{data['files']} files; skipped: {data['skipped'] or 'none'}), Quantus "
        f"{data['quantus']}, batch {data['batch']}, {data['provenance']['threads']} CPU "
        f"threads at load average {data['provenance']['machine']['load_average_1min']}."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", help="data root (holding ilsvrc_val_sample/) or that folder")
    parser.add_argument("--limit", type=int, default=200, help="images, evenly spaced")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the table here")
    parser.add_argument("--results", default=None, help="write the scores as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from tqdm import tqdm

    from dense_readout import DenseReadout, load_pretrained
    from dense_readout.evaluation.datasets import ILSVRCBoxes
    from dense_readout.evaluation.protocol import Protocol, paper_preprocess

    root = Path(args.root)
    if (root / "ilsvrc_val_sample").is_dir():
        root = root / "ilsvrc_val_sample"
    dataset = ILSVRCBoxes(root, real=False)
    model, _, _, model_name = load_pretrained()
    layer = DenseReadout(model).adapter.target_layer()
    protocol = Protocol(paper_preprocess(model, "model"))
    count = min(args.limit, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    funcs = explain_funcs(model, layer)
    results: dict = defaultdict(lambda: defaultdict(list))
    seconds: dict = defaultdict(float)
    skipped: dict = defaultdict(int)
    used = 0
    for start in tqdm(range(0, len(indices), args.batch), desc="batches", file=sys.stderr):
        images, masks, labels = load_batch(
            dataset, protocol, indices[start : start + args.batch], skipped
        )
        if images:
            x, s, y = np.stack(images), np.stack(masks), np.asarray(labels)
            score_batch(model, x, y, s, funcs, results, seconds)
            used += len(images)
    header = (
        f"Embedded {model_name}, ILSVRC2012 val sample: N = {used} images (--limit {args.limit}, "
        f"evenly spaced over {len(dataset)} files; skipped: {dict(skipped) or 'none'}); target: "
        f"ground-truth class; mask: union of the boxes after resize 256 / centre crop 224. "
        f"Scores in % (Quantus {__import__('quantus').__version__}, default metric settings); "
        f"seconds: explain call only, batch {args.batch}, {args.threads} CPU threads (shared)."
    )
    data = {
        "model": model_name,
        "images": used,
        "limit": args.limit,
        "files": len(dataset),
        "skipped": dict(skipped),
        "batch": args.batch,
        "quantus": __import__("quantus").__version__,
        "methods": summarise(results, seconds, max(used, 1)),
    }
    text = header + "\n\n" + markdown_table(data)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.results:
        from _results import write_results

        write_results(args.results, data, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
