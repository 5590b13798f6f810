"""Receptive-field diagnostic over a dataset: how much of a cell's relevance leaves its patch.

For each image of ``DATA_ROOT/ilsvrc_val_sample/val`` (sorted, first ``--images``),
preprocessed with the paper's protocol (shorter side 256, centre crop 224, the
model's own normalisation), ``--cells-per-image`` cells drawn at random (seeded)
are refined with LRP to their own top-1 score. Printed per model:

* outside share: relevance mass (|R|, and positive part R+) outside the cell's own
  32×32 patch — 0 would mean the cell is an independent instance; a uniform
  spread gives 1 − 1/49 = 0.98;
* 3×3-window share versus the share a uniform spread would put in that window;
* the conservation ratio (input relevance / cell score), the health check.

``--figure PATH`` also draws the paper's Fig. 8 for the chelsea photo (scikit-image)
and ``--cell U V``.

Usage:

    python benchmarks/lrp_receptive_field.py DATA_ROOT [--images 20] [--cells-per-image 5]
        [--model tf_efficientnet_lite0 --checkpoint FILE] [--composite NAME] [--figure PATH]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--cells-per-image", type=int, default=5)
    parser.add_argument("--model", default=None, help="timm name (default: the embedded model)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--composite", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--cell", type=int, nargs=2, default=(3, 3))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dense_readout import DenseReadout, Preprocess, load_image, load_pretrained
    from dense_readout.lrp import (
        LRPReadout,
        outside_share,
        summarize_shares,
        uniform_window_share,
        window_share,
    )

    model, _, names, name = load_pretrained(args.model, args.checkpoint)
    preprocess = Preprocess.from_model(model, normalization="model", crop_pct=0.875)
    lrp = LRPReadout(model, args.composite)
    files = sorted((args.data_root / "ilsvrc_val_sample" / "val").glob("*.JPEG"))[: args.images]
    if not files:
        raise SystemExit(f"no images under {args.data_root / 'ilsvrc_val_sample' / 'val'}")
    rng = random.Random(args.seed)
    outside_abs, outside_pos, window, uniform_window, conservation = [], [], [], [], []
    started = time.perf_counter()
    for path in files:
        x = preprocess(load_image(path)).unsqueeze(0)
        h, w = DenseReadout(model)(x).grid_size
        which = rng.sample(
            [(u, v) for u in range(h) for v in range(w)], min(args.cells_per_image, h * w)
        )
        cells = lrp.cells(x, which=which)
        uniform = uniform_window_share((h, w), tuple(x.shape[-2:]), radius=1)
        abs_out = outside_share(cells.relevance, "abs")
        pos_out = outside_share(cells.relevance, "positive")
        win = window_share(cells.relevance, radius=1)
        for u, v in which:
            outside_abs.append(abs_out[0, u, v])
            outside_pos.append(pos_out[0, u, v])
            window.append(win[0, u, v])
            uniform_window.append(uniform[u, v])
            conservation.append(cells.conservation[0, u, v])
    elapsed = time.perf_counter() - started
    cells_total = len(outside_abs)
    print(
        f"model={name} composite={lrp.composite_name} images={len(files)} cells={cells_total} "
        f"({args.cells_per_image}/image, seed {args.seed}) preprocessing=256->224 crop, model mean/std "
        f"time={elapsed:.0f}s"
    )
    for label, values, uniform_value in (
        ("outside share |R|", outside_abs, 1 - 1 / (h * w)),
        ("outside share R+", outside_pos, 1 - 1 / (h * w)),
    ):
        s = summarize_shares([torch.stack(values)], uniform=uniform_value)
        print(
            f"{label:20s} mean={s.mean:.3f} median={s.median:.3f} q10={s.q10:.3f} q90={s.q90:.3f} "
            f"(uniform spread: {s.uniform:.3f}; own patch only: 0)"
        )
    win = torch.stack(window)
    base = torch.stack(uniform_window)
    print(
        f"3x3-window share |R|  mean={float(win.mean()):.3f} vs uniform {float(base.mean()):.3f} "
        f"(ratio {float(win.mean() / base.mean()):.2f}); cells above uniform: "
        f"{int((win > base).sum())}/{cells_total}"
    )
    cons = summarize_shares([torch.stack(conservation)])
    print(f"conservation ratio   median={cons.median:.3g} q10={cons.q10:.3g} q90={cons.q90:.3g}")

    if args.figure is not None:
        from PIL import Image
        from skimage import data

        from dense_readout.lrp import plot_cell_relevance

        x = preprocess(Image.fromarray(data.chelsea())).unsqueeze(0)
        result = lrp.cell(x, cell=tuple(args.cell))
        labels = result.scores.argmax(dim=1)[0]
        k = int(result.targets[0])
        share = float(result.outside_share()[0])
        figure = plot_cell_relevance(
            preprocess.denormalize(x[0]),
            labels,
            result.relevance[0],
            tuple(args.cell),
            names,
            title=f"{name}: cell {tuple(args.cell)} = '{names[k].split(',')[0]}' (Z = {float(result.start[0]):.2f}); "
            f"{share:.0%} of |R| outside the cell; conservation {float(result.conservation[0]):.2g}",
        )
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=100, bbox_inches="tight")
        print(
            f"figure: {args.figure} (cell {tuple(args.cell)}, class {k} '{names[k]}', "
            f"outside share {share:.3f}, conservation {float(result.conservation[0]):.3g})"
        )


if __name__ == "__main__":
    main()
