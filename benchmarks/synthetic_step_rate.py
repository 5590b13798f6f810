"""Training throughput (scenes/s) of a synthetic recipe's model, to size a CPU run.

One AdamW step = forward + cross-entropy + backward + update on random inputs of the
recipe's size; the first step is a warm-up, the next ``--steps`` are timed.

    python benchmarks/synthetic_step_rate.py --recipes cpu-resnet18 cpu2h-resnet18 --batch 64

``--results PATH`` writes the rates as JSON (command, versions, threads, load);
:func:`rates_block` renders the docs' lines from it. The recipes are timed in turn,
``--rounds`` times alternately, and the medians reported, so load that drifts during
the run hits them alike: read the ratio, not the absolute rates.
"""

from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--rounds", type=int, default=1, help="alternate the recipes N times")
    parser.add_argument("--results", default=None, help="write the rates as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples: dict[str, list[float]] = {name: [] for name in args.recipes}
    for _ in range(args.rounds):
        for name in args.recipes:
            samples[name].append(scenes_per_second(name, args.batch, args.steps))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    payload = {
        "batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "reference": args.recipes[0],
        "scenes_per_second": rates,
    }
    print(rate_lines(payload))
    if args.results:
        from _results import write_results

        write_results(args.results, payload, args.threads)
    return 0


def rate_lines(data: dict) -> str:
    """One line per recipe: scenes/s and the ratio to the first recipe."""
    first = data["scenes_per_second"][data["reference"]]
    return "\n".join(
        f"# {name}: {rate:.1f} scenes/s ({rate / first:.2f}x {data['reference']})"
        for name, rate in data["scenes_per_second"].items()
    )


def rates_block(data: dict) -> str:
    """The docs' block: the command that wrote the JSON, then its rates and the load."""
    machine = data["provenance"]["machine"]
    return (
        f"```bash\n{data['provenance']['command']}\n{rate_lines(data)}\n"
        f"# {data['provenance']['threads']} threads, load average "
        f"{machine['load_average_1min']} on {machine['cores']} cores at the end\n```"
    )


if __name__ == "__main__":
    raise SystemExit(main())
