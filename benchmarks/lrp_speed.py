"""Speed of LRP refinement of every readout cell, as ratios to one forward pass.

Refining all h·w cells of one image (the embedded EfficientNet-Lite0, 224 px, 7×7
grid) with each strategy of ``LRPReadout.cells``:

* ``expand`` (default): one forward + one backward pass over the image repeated
  once per cell (chunked);
* ``vmap``: one forward pass + one vectorised backward pass (``is_grads_batched``);
* ``loop``: one forward pass + one backward pass per cell;
* ``naive`` (with ``--naive``): ``LRPReadout.cell`` called once per cell, i.e. h·w
  separate unbatched forward + backward passes.

Every number printed is measured in this run (median of ``--repeats``). Usage:

    python benchmarks/lrp_speed.py [--size 224] [--repeats 3] [--naive] [--threads 2]
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
    parser.add_argument("--chunk", type=int, default=None, help="cells per batched pass (default: all)")
    parser.add_argument("--naive", action="store_true", help="also time h·w separate cell() calls")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from PIL import Image
    from skimage import data

    from dense_readout import DenseReadout, load_pretrained
    from dense_readout.lrp import LRPReadout

    model, preprocess, _, name = load_pretrained()
    x = preprocess(Image.fromarray(data.chelsea())).unsqueeze(0)
    if args.size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False)
    readout = DenseReadout(model)
    lrp = LRPReadout(model)
    lrp.cell(x, cell=(0, 0))  # warm-up (traces the batch-norm pairs once)

    forward = timed(lambda: readout(x), args.repeats)
    grid = readout(x).grid_size
    cells = grid[0] * grid[1]
    one_cell = timed(lambda: lrp.cell(x, cell=(0, 0)), args.repeats)
    print(f"model={name} input={args.size}px grid={grid[0]}x{grid[1]} ({cells} cells) threads={args.threads} "
          f"composite={lrp.composite_name}")
    print(f"forward pass (readout): {forward * 1e3:.1f} ms")
    print(f"one cell (1 LRP forward+backward): {one_cell:.2f} s = {one_cell / forward:.1f}x forward")
    rows = []
    for strategy in ("expand", "vmap", "loop"):
        seconds = timed(lambda: lrp.cells(x, strategy=strategy, chunk_size=args.chunk), args.repeats)
        rows.append((strategy, seconds))
    if args.naive:
        def naive() -> None:
            for u in range(grid[0]):
                for v in range(grid[1]):
                    lrp.cell(x, cell=(u, v))

        rows.append(("naive (h·w cell() calls)", timed(naive, 1)))
    print(f"all {cells} cells:")
    for label, seconds in rows:
        print(f"  {label:26s} {seconds:8.2f} s = {seconds / forward:8.1f}x forward = "
              f"{seconds / one_cell:6.1f}x one cell")


if __name__ == "__main__":
    main()
