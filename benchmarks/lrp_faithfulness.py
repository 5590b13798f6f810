"""Faithfulness of LRP-refined readout cells: region perturbation, most relevant first (MoRF).

For each image of ``DATA_ROOT/ilsvrc_val_sample/val`` (``--images`` evenly spaced over
the sorted list; the paper's preprocessing: shorter side 256, centre crop 224, the
model's own mean/std) and the model's top-1 class ``k``, each method gives a
224×224 attribution map; the image is cut into ``--patch``-px patches (14×14 at
16 px), the patches are ordered by their summed attribution (ties broken at
random, seeded) and replaced, most relevant first, ``--per-step`` at a time, by a
baseline (``mean``: the normalisation's mean colour, 0 after normalising; ``blur``:
a Gaussian blur of the image, sigma 8 px). The curve is the target's softmax
probability and logit after each step (step 0: the clean image). Reported per
method, averaged over images:

* AOPC = mean over the curve's points of ``f(x_0) - f(x_j)`` (Samek et al. 2017;
  higher = the first-removed regions matter more = more faithful), for the
  probability and for the logit;
* AUC = mean of the probability curve (lower = more faithful).

Methods (the embedded EfficientNet-Lite0, or ``--vit``: a random-init timm ViT):

* ``LRP cell``: ``LRPReadout.cell`` of the top-1 class's most activated cell
  ``argmax_uv Z[k]`` (the family's default composite);
* ``readout cell (upsampled)``: that cell alone, ``Z[k,u,v]`` on a one-hot grid,
  bilinearly upsampled (the readout's resolution, no refinement);
* ``LRP class map``: ``LRPReadout.class_map`` of ``k`` (all cells);
* ``readout Z_k (upsampled)``: the class map ``Z[k]`` bilinearly upsampled;
* ``Gradient×Input``: of the logit ``k``, summed over colour channels;
* ``random``: a random patch order.

Every number is measured in this run; the JSON (``--out``) holds the mean curves.

Usage:

    python benchmarks/lrp_faithfulness.py DATA_ROOT [--images 50] [--patch 16]
        [--per-step 14] [--baseline mean|blur] [--batch 8] [--vit] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METHODS = (
    "LRP cell",
    "readout cell (upsampled)",
    "LRP class map",
    "readout Z_k (upsampled)",
    "Gradient×Input",
    "random",
)


def attributions(lrp, model, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``{method: B×H×W}`` (random: None) and the targets ``k`` for a batch."""
    from dense_readout import DenseReadout

    size = x.shape[-2:]
    with torch.no_grad():
        logits = model(x)
        scores = DenseReadout(model)(x).scores  # Z, B×K×h×w
    k = logits.argmax(dim=1)
    batch = torch.arange(x.shape[0])
    z_k = scores[batch, k]  # B×h×w
    flat = z_k.flatten(1).argmax(dim=1)
    cells = torch.stack([flat // z_k.shape[-1], flat % z_k.shape[-1]], dim=1)
    one_hot = torch.zeros_like(z_k)
    one_hot[batch, cells[:, 0], cells[:, 1]] = z_k[batch, cells[:, 0], cells[:, 1]]

    def up(grid: torch.Tensor) -> torch.Tensor:
        return F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    x_grad = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x_grad)[batch, k].sum(), x_grad)
    maps = {
        "LRP cell": lrp.cell(x, cell=cells, target=k).relevance[:, 0],
        "readout cell (upsampled)": up(one_hot),
        "LRP class map": lrp.class_map(x, target=k).relevance[:, 0],
        "readout Z_k (upsampled)": up(z_k),
        "Gradient×Input": (grad * x).sum(dim=1),
    }
    return {m: v.detach() for m, v in maps.items()}, k


def patch_order(
    attribution: torch.Tensor | None, patch: int, rng: np.random.Generator
) -> np.ndarray:
    """Patch indices, most relevant first (ties and ``None`` in random order)."""
    h, w = 224 // patch, 224 // patch
    ties = rng.random(h * w)
    if attribution is None:
        return np.argsort(ties)
    sums = F.avg_pool2d(attribution[None, None], patch)[0, 0].flatten().double().numpy()
    return np.lexsort((ties, -sums))


def morf_curve(
    model,
    image: torch.Tensor,
    baseline: torch.Tensor,
    order: np.ndarray,
    patch: int,
    per_step: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Probability and logit of ``k`` after replacing 0, per_step, 2·per_step, … patches."""
    cols = 224 // patch
    steps = list(range(0, len(order) + 1, per_step))
    if steps[-1] != len(order):
        steps.append(len(order))
    mask = torch.zeros(len(steps), 1, 224, 224)
    for row, count in enumerate(steps):
        for index in order[:count]:
            u, v = divmod(int(index), cols)
            mask[row, :, u * patch : (u + 1) * patch, v * patch : (v + 1) * patch] = 1
    perturbed = image[None] * (1 - mask) + baseline[None] * mask
    with torch.no_grad():
        logits = model(perturbed)
    return logits.softmax(dim=1)[:, k].numpy(), logits[:, k].numpy()


def blur(image: torch.Tensor, sigma: float = 8.0) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    c = image.shape[0]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x[0]


def load_model(vit: bool, seed: int):
    from dense_readout import Preprocess, load_pretrained

    if not vit:
        model, _, _, name = load_pretrained()
        return model, Preprocess.from_model(model, normalization="model", crop_pct=0.875), name
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=1000).eval()
    name = "vit_tiny_patch16_224 (random init: no real weights offline)"
    return model, Preprocess.from_model(model, normalization="model", crop_pct=0.875), name


def main() -> None:  # long: argument parsing, the per-batch loop and the report in one place
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--per-step", type=int, default=14)
    parser.add_argument("--baseline", choices=("mean", "blur"), default="mean")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vit", action="store_true", help="a random-init timm ViT (CP-LRP)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/lrp_faithfulness.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dense_readout import load_image
    from dense_readout.lrp import LRPReadout

    model, preprocess, name = load_model(args.vit, args.seed)
    lrp = LRPReadout(model)
    files = sorted((args.data_root / "ilsvrc_val_sample" / "val").glob("*.JPEG"))
    if not files:
        raise SystemExit(f"no images under {args.data_root / 'ilsvrc_val_sample' / 'val'}")
    picks = np.linspace(0, len(files) - 1, min(args.images, len(files))).round().astype(int)
    files = [files[i] for i in picks]
    rng = np.random.default_rng(args.seed)
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in METHODS}
    started = time.perf_counter()
    for first in range(0, len(files), args.batch):
        x = torch.stack([preprocess(load_image(p)) for p in files[first : first + args.batch]])
        maps, targets = attributions(lrp, model, x)
        for b in range(x.shape[0]):
            base = torch.zeros_like(x[b]) if args.baseline == "mean" else blur(x[b])
            for method in METHODS:
                order = patch_order(maps[method][b] if method in maps else None, args.patch, rng)
                curves[method].append(
                    morf_curve(model, x[b], base, order, args.patch, args.per_step, int(targets[b]))
                )
        print(
            f"  {first + x.shape[0]}/{len(files)} images, {time.perf_counter() - started:.0f}s",
            flush=True,
        )
    elapsed = time.perf_counter() - started
    report(args, name, lrp.composite_name, len(files), curves, elapsed)


def report(args, name: str, composite: str, count: int, curves: dict, elapsed: float) -> None:
    rows = {}
    for method, runs in curves.items():
        prob = np.stack([p for p, _ in runs])
        logit = np.stack([z for _, z in runs])
        rows[method] = {
            "aopc_prob": float((prob[:, :1] - prob).mean()),
            "aopc_logit": float((logit[:, :1] - logit).mean()),
            "auc_prob": float(prob.mean()),
            "aopc_prob_sem": float(
                (prob[:, :1] - prob).mean(axis=1).std(ddof=1) / np.sqrt(len(prob))
            ),
            "mean_prob_curve": prob.mean(axis=0).round(5).tolist(),
            "mean_logit_curve": logit.mean(axis=0).round(4).tolist(),
        }
    steps = len(next(iter(rows.values()))["mean_prob_curve"])
    print(
        f"model={name} composite={composite} images={count} patch={args.patch}px "
        f"({(224 // args.patch) ** 2} patches, {args.per_step} per step, {steps} points) "
        f"baseline={args.baseline} seed={args.seed} threads={args.threads} time={elapsed:.0f}s"
    )
    print(f"  {'method':26s} {'AOPC prob':>10s} {'± sem':>7s} {'AOPC logit':>11s} {'AUC prob':>9s}")
    for method, row in rows.items():
        print(
            f"  {method:26s} {row['aopc_prob']:10.4f} {row['aopc_prob_sem']:7.4f} "
            f"{row['aopc_logit']:11.3f} {row['auc_prob']:9.4f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {
        "model": name,
        "composite": composite,
        "images": count,
        "args": meta,
        "methods": rows,
    }
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
