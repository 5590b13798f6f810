"""Conservation of CP-LRP on every supported transformer family (random init, biases zeroed).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/lrp_transformers.py [--full-size]
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/lrp_transformers.py --speed [--size 224] [--repeats 3]

For each family: the input relevance / starting relevance of 4 cells and of one class
map on 2 random 224 px images (``--full-size``: the real architectures, vit_small,
swin_tiny, vit_b_16, swin_t; default: 2-block versions at 64 px), with every bias and
every learned token constant (class/register tokens, position embeddings) set to zero,
the default composite (``cp_lrp``) and its default epsilon/stabilizer (1e-6). No
pretrained transformer weights are available offline, so these numbers (and any
faithfulness statement about transformers here) are for random init only.

``--speed``: the time to refine all h·w cells of one image (``--model``, ``--size``) (``cells``, strategies
``expand`` and ``vmap``) as a ratio to one backward pass (a plain gradient pass, forward
plus ``autograd.grad`` of one logit, minus a forward pass with gradients), all measured
in this run (median of ``--repeats``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from torch import nn
from torchvision.models import swin_t, vit_b_16

from dense_readout.lrp import LRPReadout

CONSTANTS = ("cls_token", "reg_token", "pos_embed", "class_token", "pos_embedding")


def families(full: bool) -> dict[str, tuple[nn.Module, int]]:
    small = {} if full else {"depth": 2}
    size = 224 if full else 64
    vit = "vit_small_patch16_224"

    def tv_vit() -> nn.Module:
        model = vit_b_16()
        nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-inits it
        return model

    swin = {} if full else {"depths": (2, 2), "num_heads": (3, 6), "img_size": 64, "window_size": 4}
    return {
        "timm ViT [CLS] (vit_small)": (timm.create_model(vit, img_size=size, **small), size),
        "timm ViT + 4 registers, layer scale": (
            timm.create_model(vit, img_size=size, reg_tokens=4, init_values=1e-5, **small),
            size,
        ),
        "timm ViT avg + fc_norm": (
            timm.create_model(vit, img_size=size, class_token=False, global_pool="avg", **small),
            size,
        ),
        "timm ViT avg, no fc_norm": (
            timm.create_model(
                vit, img_size=size, class_token=False, global_pool="avg", fc_norm=False, **small
            ),
            size,
        ),
        "timm Swin (swin_tiny)": (
            timm.create_model("swin_tiny_patch4_window7_224", **swin),
            size,
        ),
        "torchvision vit_b_16": (tv_vit(), 224),
        "torchvision swin_t": (swin_t(), 224),
    }


def zero_constants(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name.split(".")[-1] in CONSTANTS:
                parameter.zero_()
    return model.eval()


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(name: str, size: int, repeats: int) -> None:
    model = timm.create_model(name, img_size=size).eval()
    lrp = LRPReadout(model)
    x = torch.randn(1, 3, size, size)

    def gradient() -> None:
        inputs = x.clone().requires_grad_(True)
        torch.autograd.grad(model(inputs)[0, 0], inputs)

    gradient_pass = timed(gradient, repeats)
    backward = gradient_pass - timed(lambda: model(x.clone().requires_grad_(True)), repeats)
    grid = lrp.readout(x).grid_size
    print(f"{name}, {size} px, grid {grid[0]}x{grid[1]}, threads={torch.get_num_threads()}")
    print(f"gradient pass {gradient_pass * 1e3:.0f} ms, backward alone {backward * 1e3:.0f} ms")
    for strategy in ("expand", "vmap"):
        seconds = timed(lambda s=strategy: lrp.cells(x, strategy=s), repeats)
        print(
            f"all {grid[0] * grid[1]} cells, {strategy}: {seconds:.1f} s = "
            f"{seconds / backward:.0f}x backward = {seconds / gradient_pass:.0f}x gradient pass"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--size", type=int, default=224, help="--speed: input side")
    parser.add_argument("--repeats", type=int, default=3, help="--speed: median of this many")
    args = parser.parse_args()
    if args.speed:
        speed(args.model, args.size, args.repeats)
        return
    torch.manual_seed(0)
    print("| family | cells: conservation min–max | class map | composite | s/cell |")
    print("|---|---|---|---|---|")
    for name, (model, size) in families(args.full_size).items():
        lrp = LRPReadout(zero_constants(model))
        x = torch.randn(2, 3, size, size)
        h, w = lrp.readout(x[:1]).scores.shape[-2:]
        cells = [(0, 0), (h // 2, w // 2), (h - 1, 0), (1, w - 1)]
        start = time.perf_counter()
        ratios = torch.cat([lrp.cell(x, cell=c).conservation for c in cells])
        per_cell = (time.perf_counter() - start) / len(cells)
        whole = lrp.class_map(x).conservation
        print(
            f"| {name} | {ratios.min():.4f}–{ratios.max():.4f} | "
            f"{whole.min():.4f}–{whole.max():.4f} | {lrp.composite_name} | {per_cell:.2f} |"
        )


if __name__ == "__main__":
    main()
