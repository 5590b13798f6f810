"""Training throughput (scenes/s) of a synthetic recipe's model, to size a CPU run.

One AdamW step = forward + cross-entropy + backward + update on random inputs of the
recipe's size; the first step is a warm-up, the next ``--steps`` are timed.

    python benchmarks/synthetic_step_rate.py --recipes cpu-resnet18 cpu2h-resnet18 --batch 64
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def scenes_per_second(recipe_name: str, batch: int, steps: int) -> float:
    from dense_readout.experiments.synthetic_train import build_model, get_recipe

    recipe = get_recipe(recipe_name)
    model = build_model(recipe).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    x = torch.randn(batch, 3, recipe.input_size, recipe.input_size)
    y = torch.randint(0, 20, (batch,))
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["cpu-resnet18", "cpu2h-resnet18"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rates = {name: scenes_per_second(name, args.batch, args.steps) for name in args.recipes}
    first = rates[args.recipes[0]]
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} scenes/s ({rate / first:.2f}x {args.recipes[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
