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
``--torchvision`` does the same for every builder of every torchvision family in the
registry ``dense_readout.lrp.families.FAMILIES`` (biases zeroed with
``dense_readout.lrp.bias_free``), also with the family's default composite and with
``epsilon_plus_flat_depthwise``.

``--json PATH`` writes what is printed, with the command, to a JSON file (the tables
in docs/lrp.md come from ``docs/results/lrp_speed.json``,
``lrp_conservation_timm.json`` and ``lrp_conservation_torchvision.json``).
``--profile`` adds a torch.profiler breakdown of one chunk of all-cells refinement
(share of time in convolution forward, convolution backward and the rest).

Usage:

    python benchmarks/lrp_speed.py [--size 224] [--repeats 3] [--naive] [--threads 2]
    python benchmarks/lrp_speed.py --families [--size 128]
    python benchmarks/lrp_speed.py --torchvision [--size 64]
    python benchmarks/lrp_speed.py --strategies expand --composites epsilon_plus_flat epsilon \
        --profile --json docs/results/lrp_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

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
    parser.add_argument("--composites", nargs="+", default=[None], help="default: the family's")
    parser.add_argument("--profile", action="store_true", help="op breakdown of one chunk")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    record: dict = {
        "provenance": {
            "command": "python " + " ".join(sys.argv),
            "threads": args.threads,
            "torch": torch.__version__,
            "zennit": version("zennit"),
            # "measured idle" is checkable: the 1-minute load average when the run started
            # (after it, the load includes the run's own threads)
            "load_average_1min_before": os.getloadavg()[0],
        }
    }
    if args.families:
        record["conservation"] = families(args.size)
    elif args.torchvision:
        record["conservation"] = torchvision_families(args.size)
    else:
        record.update(speed(args))
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


def speed(args: argparse.Namespace) -> dict:
    """Time all-cells refinement against a forward, a gradient and a backward pass."""
    from PIL import Image
    from skimage import data

    from dense_readout import DenseReadout, load_pretrained

    model, preprocess, _, name = load_pretrained()
    x = preprocess(Image.fromarray(data.chelsea())).unsqueeze(0)
    if args.size != x.shape[-1]:
        x = torch.nn.functional.interpolate(
            x, size=(args.size, args.size), mode="bilinear", align_corners=False
        )
    readout = DenseReadout(model)
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
    print(
        f"model={name} input={args.size}px grid={grid[0]}x{grid[1]} ({cells} cells) threads={args.threads}"
    )
    print(f"forward pass (readout): {forward * 1e3:.1f} ms")
    print(f"gradient pass (forward + backward of one logit): {gradient_pass * 1e3:.1f} ms")
    print(f"backward alone (gradient pass - forward with grad): {backward * 1e3:.1f} ms")
    base = {"forward_s": forward, "gradient_pass_s": gradient_pass, "backward_s": backward}
    rows = _composite_rows(args, model, x, grid, base)
    record = {"model": name, "size": args.size, "grid": list(grid), "cells": cells, **base}
    record["rows"] = rows
    if args.profile:
        record["profile"] = profile_chunk(model, x, args.chunk or 16)
    return record


def _composite_rows(args, model, x, grid, base: dict) -> list[dict]:
    """Time one cell and all cells (each strategy) with one composite; print and return rows."""
    from dense_readout.lrp import LRPReadout

    rows = []
    for composite in args.composites:
        lrp = LRPReadout(model, composite)
        lrp.cell(x, cell=(0, 0))  # warm-up (traces the batch-norm pairs once)
        one_cell = timed(lambda lrp=lrp: lrp.cell(x, cell=(0, 0)), args.repeats)
        cells = grid[0] * grid[1]
        print(
            f"composite={lrp.composite_name}: one cell {one_cell:.2f} s = {one_cell / base['forward_s']:.1f}x forward"
        )
        for strategy in args.strategies:
            seconds = timed(
                lambda s=strategy, lrp=lrp: lrp.cells(x, strategy=s, chunk_size=args.chunk),
                args.repeats,
            )
            row = {
                "composite": lrp.composite_name,
                "strategy": strategy,
                "all_cells_s": seconds,
                "one_cell_s": one_cell,
                "x_forward": seconds / base["forward_s"],
                "x_gradient_pass": seconds / base["gradient_pass_s"],
                "x_backward": seconds / base["backward_s"],
                "x_cells_backward": seconds / (cells * base["backward_s"]),
            }
            rows.append(row)
            print(
                f"  all {cells} cells, {strategy:7s} {seconds:8.2f} s = {row['x_forward']:7.1f}x forward = "
                f"{row['x_backward']:6.1f}x backward = {row['x_cells_backward']:.2f} x (h·w backward passes)"
            )
        if args.naive:
            naive = timed(lambda lrp=lrp: [lrp.cell(x, cell=c) for c in _all(grid)], 1)
            print(
                f"  naive (h·w cell() calls) {naive:.2f} s = {naive / base['backward_s']:.1f}x backward"
            )
    return rows


def _all(grid) -> list[tuple[int, int]]:
    return [(u, v) for u in range(grid[0]) for v in range(grid[1])]


def profile_chunk(model, x, chunk: int) -> dict:
    """torch.profiler over one chunk of all-cells refinement: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    from dense_readout.lrp import LRPReadout

    lrp = LRPReadout(model)
    which = _all(lrp.readout(x).grid_size)[:chunk]
    lrp.cells(x, which=which[:1])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        lrp.cells(x, which=which, chunk_size=chunk)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {
        "convolution forward": ("mkldnn_convolution", "_slow_conv2d_forward"),
        "convolution backward": ("convolution_backward", "_slow_conv2d_backward"),
    }
    shares = {
        g: sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
        for g, keys in groups.items()
    }
    shares["everything else (element-wise rule arithmetic, copies, batch norm)"] = 1 - sum(
        shares.values()
    )
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    ops = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in top]
    conv_fw = sum(e.count for e in events if any(k in e.key for k in groups["convolution forward"]))
    print(f"profile of {len(which)} cells in one chunk ({lrp.composite_name}):")
    for group, share in shares.items():
        print(f"  {group:70s} {share:6.1%}")
    for op in ops:
        print(f"    {op['op']:60s} {op['share']:6.1%} ({op['calls']} calls)")
    return {
        "cells": len(which),
        "composite": lrp.composite_name,
        "shares": shares,
        "top_ops": ops,
        "convolution_forward_calls": conv_fw,
    }


FAMILIES = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "tf_efficientnet_lite0",
    "mobilenetv3_small_100",
    "convnext_atto",
)


def families(size: int) -> list[dict]:
    import timm
    from torch import nn

    from dense_readout.lrp import LRPReadout

    print(
        f"conservation ratio (input relevance / cell score), composite=epsilon (epsilon = stabilizer = 1e-9), "
        f"random init, "
        f"biases and BN means zeroed, {size}px, cell (1, 1):"
    )
    print(f"  {'model':24s} {'no canonizers':>14s} {'canonized':>10s}")
    rows = []
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
        rows.append({"model": name, "no_canonizers": ratios[0], "epsilon": ratios[1]})
    return rows


def torchvision_families(size: int) -> list[dict]:
    from dense_readout.lrp import LRPReadout, bias_free
    from dense_readout.lrp.families import FAMILIES, family_of, supported_torchvision_builders

    print(
        f"conservation ratio (input relevance / cell score), random init, biases and BN means "
        f"zeroed (bias_free), {size}px, cell (1, 0), mean of 2 images; epsilon = stabilizer = 1e-9 "
        f"for 'epsilon', stabilizer = 1e-9 for the others:"
    )
    print(
        f"  {'model':22s} {'no canonizers':>14s} {'epsilon':>9s} {'default composite':>28s} {'depthwise':>10s}"
    )
    exact = {"epsilon": 1e-9, "stabilizer": 1e-9}
    runs = (
        ("epsilon", False),
        ("epsilon", True),
        (None, True),
        ("epsilon_plus_flat_depthwise", True),
    )
    rows = []
    for _, builder in supported_torchvision_builders():
        family = next(f for _, f in FAMILIES.items() if builder in f.builders)
        torch.manual_seed(0)
        side = max(size, family.min_size)
        model = bias_free(family.build(builder, 10), torch.randn(4, 3, side, side))
        assert family_of(model) is family
        x = torch.randn(2, 3, side, side)
        ratios = []
        for composite, canonize in runs:
            options = exact if composite == "epsilon" else {"stabilizer": 1e-9}
            lrp = LRPReadout(model, composite, composite_options=options, canonize=canonize)
            ratios.append(float(lrp.cell(x, cell=(1, 0)).conservation.mean()))
        default = f"{family.composite} {ratios[2]:.4f}"
        print(
            f"  {builder:22s} {ratios[0]:14.4g} {ratios[1]:9.4f} {default:>28s} {ratios[3]:10.4f}"
        )
        rows.append(
            {
                "family": family.name,
                "builder": builder,
                "no_canonizers": ratios[0],
                "epsilon": ratios[1],
                "default_composite": family.composite,
                "default": ratios[2],
                "epsilon_plus_flat_depthwise": ratios[3],
            }
        )
    return rows


# -- renderers for docs/lrp.md (tests/test_docs_results.py): JSON in, Markdown out ------------


def _machine(provenance: dict) -> str:
    """How loaded the machine was when the run started: idle below one busy core."""
    load = provenance.get("load_average_1min_before")
    if load is None:
        return "shared machine, load not recorded"
    return f"{'idle' if load < 1.0 else 'shared'} machine, load average {load:.2f} at the start"


def speed_table(data: dict) -> str:
    """All-cells time per composite and strategy, as ratios measured in one run."""
    threads = data["provenance"]["threads"]
    head = (
        f"{data['model']}, {data['size']} px, {data['cells']} cells; one backward pass "
        f"{data['backward_s'] * 1e3:.0f} ms, one forward pass {data['forward_s'] * 1e3:.0f} ms "
        f"({threads} thread{'s' if threads > 1 else ''}, {_machine(data['provenance'])})."
    )
    lines = [
        head,
        "",
        "| composite | strategy | all cells | × forward | × backward | × (h·w backward passes) |",
        "|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        lines.append(
            f"| `{row['composite']}` | `{row['strategy']}` | {row['all_cells_s']:.1f} s | "
            f"{row['x_forward']:.1f} | {row['x_backward']:.1f} | {row['x_cells_backward']:.2f} |"
        )
    return "\n".join(lines)


def profile_table(data: dict) -> str:
    """Where the time of one chunk of all-cells refinement goes (torch.profiler, self CPU time)."""
    profile = data["profile"]
    head = (
        f"{profile['cells']} cells in one chunk, `{profile['composite']}`, "
        f"{profile['convolution_forward_calls']} convolution forward calls:"
    )
    lines = [
        head,
        "",
        "| where | share of CPU time |",
        "|---|---|",
    ]
    lines += [f"| {group} | {share:.0%} |" for group, share in profile["shares"].items()]
    return "\n".join(lines)


def conservation_torchvision_table(data: dict) -> str:
    """Conservation with biases zeroed, per torchvision builder and rule set."""
    lines = [
        "| builder | no canonizers | `epsilon` | default composite | `epsilon_plus_flat_depthwise` |",
        "|---|---|---|---|---|",
    ]
    for row in data["conservation"]:
        lines.append(
            f"| {row['builder']} | {row['no_canonizers']:.3g} | {row['epsilon']:.4f} | "
            f"`{row['default_composite']}` {row['default']:.4f} | {row['epsilon_plus_flat_depthwise']:.4f} |"
        )
    return "\n".join(lines)


def conservation_timm_table(data: dict) -> str:
    """Conservation with biases zeroed, timm models, with and without the canonizers."""
    lines = ["| model | no canonizers | canonized (`epsilon`) |", "|---|---|---|"]
    for row in data["conservation"]:
        lines.append(f"| {row['model']} | {row['no_canonizers']:.4g} | {row['epsilon']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
