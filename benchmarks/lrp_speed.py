"""Speed of LRP refinement of every readout cell, as ratios to one forward and one backward pass.

Refining all h·w cells of one image (the embedded EfficientNet-Lite0, 224 px, 7×7
grid) with each strategy of ``LRPReadout.cells``:

* ``expand`` (default): one forward + one backward pass over the image repeated
  once per cell (chunked);
* ``vmap``: one forward pass + one vectorised backward pass (``is_grads_batched``);
* ``loop``: one forward pass + one backward pass per cell;
* ``naive`` (with ``--naive``): ``LRPReadout.cell`` called once per cell, i.e. h·w
  separate unbatched forward + backward passes.

Every number printed is measured in this run (median of ``--repeats``). The
baselines: one forward pass of the readout, and one plain gradient pass (forward +
``autograd.grad`` of one logit w.r.t. the input, no LRP); "backward" alone is their
difference. ``--strategies`` picks the strategies to time (default: all three).

``--families`` instead prints the conservation health check (input relevance /
cell score) with and without the canonizers on random-init timm models whose
biases are zeroed (so a sound rule set must give 1), composite ``epsilon``;
``--torchvision`` does the same for every builder in
``dense_readout.lrp.torchvision_families.TORCHVISION_FAMILIES`` (biases zeroed with
its ``bias_free``), also with the family's default composite.

Usage:

    python benchmarks/lrp_speed.py [--size 224] [--repeats 3] [--naive] [--threads 2]
    python benchmarks/lrp_speed.py --families [--size 128]
    python benchmarks/lrp_speed.py --torchvision [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--chunk", type=int, default=None, help="cells per batched pass (default: all)"
    )
    parser.add_argument("--naive", action="store_true", help="also time h·w separate cell() calls")
    parser.add_argument(
        "--families", action="store_true", help="conservation with/without canonizers"
    )
    parser.add_argument(
        "--torchvision", action="store_true", help="conservation on torchvision families"
    )
    parser.add_argument("--strategies", nargs="+", default=["expand", "vmap", "loop"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.families:
        families(args.size)
        return
    if args.torchvision:
        torchvision_families(args.size)
        return

    from PIL import Image
    from skimage import data

    from dense_readout import DenseReadout, load_pretrained
    from dense_readout.lrp import LRPReadout

    model, preprocess, _, name = load_pretrained()
    x = preprocess(Image.fromarray(data.chelsea())).unsqueeze(0)
    if args.size != x.shape[-1]:
        x = torch.nn.functional.interpolate(
            x, size=(args.size, args.size), mode="bilinear", align_corners=False
        )
    readout = DenseReadout(model)
    lrp = LRPReadout(model)
    lrp.cell(x, cell=(0, 0))  # warm-up (traces the batch-norm pairs once)

    forward = timed(lambda: readout(x), args.repeats)

    def gradient() -> None:
        inputs = x.detach().clone().requires_grad_(True)
        torch.autograd.grad(model(inputs)[0, 0], inputs)

    gradient_pass = timed(gradient, args.repeats)
    backward = gradient_pass - timed(
        lambda: model(x.detach().clone().requires_grad_(True)), args.repeats
    )
    grid = readout(x).grid_size
    cells = grid[0] * grid[1]
    one_cell = timed(lambda: lrp.cell(x, cell=(0, 0)), args.repeats)
    print(
        f"model={name} input={args.size}px grid={grid[0]}x{grid[1]} ({cells} cells) threads={args.threads} "
        f"composite={lrp.composite_name}"
    )
    print(f"forward pass (readout): {forward * 1e3:.1f} ms")
    print(f"gradient pass (forward + backward of one logit): {gradient_pass * 1e3:.1f} ms")
    print(f"backward alone (gradient pass - forward with grad): {backward * 1e3:.1f} ms")
    print(
        f"one cell (1 LRP forward+backward): {one_cell:.2f} s = {one_cell / forward:.1f}x forward"
    )
    rows = []
    for strategy in args.strategies:
        seconds = timed(
            lambda s=strategy: lrp.cells(x, strategy=s, chunk_size=args.chunk), args.repeats
        )
        rows.append((strategy, seconds))
    if args.naive:

        def naive() -> None:
            for u in range(grid[0]):
                for v in range(grid[1]):
                    lrp.cell(x, cell=(u, v))

        rows.append(("naive (h·w cell() calls)", timed(naive, 1)))
    print(f"all {cells} cells:")
    for label, seconds in rows:
        print(
            f"  {label:26s} {seconds:8.2f} s = {seconds / forward:8.1f}x forward = "
            f"{seconds / gradient_pass:7.1f}x gradient pass = {seconds / backward:7.1f}x backward = "
            f"{seconds / one_cell:6.1f}x one cell"
        )


FAMILIES = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_small_100",
    "convnext_atto",
)


def families(size: int) -> None:
    import timm
    from torch import nn

    from dense_readout.lrp import LRPReadout

    print(
        f"conservation ratio (input relevance / cell score), composite=epsilon (epsilon = stabilizer = 1e-9), "
        f"random init, "
        f"biases and BN means zeroed, {size}px, cell (1, 1):"
    )
    print(f"  {'model':24s} {'no canonizers':>14s} {'canonized':>10s}")
    for name in FAMILIES:
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=10).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(getattr(module, "bias", None), torch.Tensor):
                    module.bias.zero_()
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.running_mean.zero_()
                    module.running_var.uniform_(0.5, 2.0)
                    module.weight.uniform_(0.5, 1.5)
        x = torch.randn(1, 3, size, size)
        ratios = []
        for canonize in (False, True):
            lrp = LRPReadout(
                model,
                "epsilon",
                composite_options={"epsilon": 1e-9, "stabilizer": 1e-9},
                canonize=canonize,
            )
            ratios.append(float(lrp.cell(x, cell=(1, 1)).conservation[0]))
        print(f"  {name:24s} {ratios[0]:14.4g} {ratios[1]:10.4f}")


def torchvision_families(size: int) -> None:
    from dense_readout.lrp import LRPReadout
    from dense_readout.lrp.torchvision_families import (
        TORCHVISION_FAMILIES,
        bias_free,
        supported_torchvision_builders,
    )

    print(
        f"conservation ratio (input relevance / cell score), random init, biases and BN means "
        f"zeroed (bias_free), {size}px, cell (1, 0), mean of 2 images; epsilon = stabilizer = 1e-9 "
        f"for 'epsilon':"
    )
    print(f"  {'model':22s} {'no canonizers':>14s} {'epsilon':>9s} {'default composite':>28s}")
    exact = {"epsilon": 1e-9, "stabilizer": 1e-9}
    for module, builder in supported_torchvision_builders():
        family = TORCHVISION_FAMILIES.get(module)
        torch.manual_seed(0)
        side = max(size, family.min_size)
        model = bias_free(family.build(builder, 10), torch.randn(4, 3, side, side))
        x = torch.randn(2, 3, side, side)
        ratios = []
        for composite, canonize in (("epsilon", False), ("epsilon", True), (None, True)):
            options = exact if composite else {"stabilizer": 1e-9}
            lrp = LRPReadout(model, composite, composite_options=options, canonize=canonize)
            ratios.append(float(lrp.cell(x, cell=(1, 0)).conservation.mean()))
        default = f"{lrp.composite_name} {ratios[2]:.4f}"
        print(f"  {builder:22s} {ratios[0]:14.4g} {ratios[1]:9.4f} {default:>28s}")


if __name__ == "__main__":
    main()
