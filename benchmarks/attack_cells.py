"""When does a targeted PGD attack flip the image? A study on the ILSVRC sample (paper A.9).

For N images of ``ilsvrc_val_sample/val`` (sorted by file name), attack toward a fixed
target list (image i gets ``TARGETS[i % len(TARGETS)]``) and record, per image, the first
step at which the image-level prediction is the target and the share of cells whose
top-1 is the target at that step. The paper's reading holds if images flip when a
*fraction* of the cells flip, not all. For exact models it also checks mean(Z) = logits
at every step, and it times one PGD step against one plain forward+backward.

Resumable: one JSON line per image in ``--out``/attack_cells.jsonl; a rerun skips the
images already there. Ctrl-C loses at most the image being attacked. The summary goes
to ``--out``/summary.json and, with ``--results``, to the JSON the docs quote.

``--check-figure`` runs the documented Fig. 11 command (``dense-readout attack
skimage:chelsea --target sombrero …``) once with 1 and once with 2 threads and records
both trajectories and whether they are identical (the attack runs in float64 so that
they are; ``--dtype float32`` shows the float32 study, which depends on the threads).

    python benchmarks/attack_cells.py ../shared/data --limit 100 --out runs/attack_cells \
        --results docs/results/attack_cells.json
    python benchmarks/attack_cells.py --check-figure --results docs/results/attack_chelsea.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from _results import write_results
from dense_readout import load_image, load_pretrained
from dense_readout.attacks import DEFAULT_ALPHA, DEFAULT_EPS, DEFAULT_STEPS, pgd

# sombrero (the paper's target), then a few classes far from most ImageNet content
TARGETS = (808, 1, 963, 980, 417)
DTYPES = {"float64": torch.float64, "float32": None}  # None: the model's own float32
# the documented Fig. 11 command (docs/attacks.md); --out is appended per run
FIGURE_COMMAND = "dense-readout attack skimage:chelsea --target sombrero --steps 20 --eps 8/255"
GRID_CELLS = 49  # EfficientNet-Lite0 at 224 px: a 7×7 grid


def pixels_of(path: Path, preprocess) -> torch.Tensor:
    picture = preprocess.geometry(load_image(path))
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def attack_one(model, preprocess, path: Path, target: int, args) -> dict:
    x = pixels_of(path, preprocess)
    with torch.no_grad():
        mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
        clean = int(model((x - mean) / std).argmax())
    if clean == target:
        return {"image": path.name, "target": target, "skipped": "clean prediction is the target"}
    start = time.perf_counter()
    trace = pgd(
        model,
        x,
        target=target,
        steps=args.steps,
        eps=args.eps,
        alpha=args.alpha,
        mean=preprocess.mean,
        std=preprocess.std,
        generator=torch.Generator().manual_seed(args.seed),
        dtype=DTYPES[args.dtype],
    )
    seconds = time.perf_counter() - start
    step = int(trace.success_step()[0])
    fraction = trace.target_cell_fraction()[:, 0]
    return {
        "image": path.name,
        "target": target,
        "clean_prediction": clean,
        "success_step": step,
        "fraction_at_success": float(fraction[step]) if step >= 0 else None,
        "final_fraction": float(fraction[-1]),
        "max_mean_residual": float(trace.mean_residual.max()),
        "exact": trace.exact,
        "seconds_per_step": seconds / (trace.steps + 1),
    }


def forward_backward_seconds(model, preprocess, path: Path, repeats: int = 7) -> float:
    """One plain forward + backward to the input (what a PGD step needs), median time."""
    x = pixels_of(path, preprocess).requires_grad_(True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.autograd.grad(model(x).logsumexp(dim=1).sum(), x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_step_ratio(model, preprocess, paths: list[Path], args) -> dict:
    """Time PGD steps and plain forward+backward passes alternately in one process.

    Alternating the two on the same images makes the ratio robust to load that
    drifts during the run (the absolute times are not).
    """
    pgd_times, plain_times = [], []
    for i, path in enumerate(paths):
        x = pixels_of(path, preprocess)
        start = time.perf_counter()
        trace = pgd(
            model,
            x,
            target=TARGETS[i % len(TARGETS)],
            steps=args.steps,
            mean=preprocess.mean,
            std=preprocess.std,
            dtype=DTYPES[args.dtype],
        )
        pgd_times.append((time.perf_counter() - start) / (trace.steps + 1))
        plain_times.append(forward_backward_seconds(model, preprocess, path, repeats=trace.steps))
    ratio = statistics.median(p / f for p, f in zip(pgd_times, plain_times, strict=True))
    return {
        "images": len(paths),
        "seconds_per_pgd_step_median": statistics.median(pgd_times),
        "seconds_per_forward_backward_median": statistics.median(plain_times),
        "pgd_step_over_forward_backward_median": ratio,
        "dtype": args.dtype,
        "steps": args.steps,
    }


def summarise(rows: list[dict]) -> dict:
    """Counts, quartiles and the histogram of the share of target cells at the flip."""
    done = [r for r in rows if "success_step" in r]
    flipped = [r for r in done if r["success_step"] >= 0]
    fractions = sorted(r["fraction_at_success"] for r in flipped)
    steps = sorted(r["success_step"] for r in flipped)

    def quartiles(values: list) -> list:
        return [float(np.percentile(values, q)) for q in (25, 50, 75)] if values else []

    return {
        "images_attacked": len(done),
        "skipped": len(rows) - len(done),
        "reached_target": len(flipped),
        "success_step_quartiles": quartiles(steps),
        "fraction_at_success_quartiles": quartiles(fractions),
        "fraction_at_success_min_max": [fractions[0], fractions[-1]] if fractions else [],
        "success_step_min_max": [steps[0], steps[-1]] if steps else [],
        "flipped_with_at_most_half_the_cells": sum(f <= 0.5 for f in fractions),
        "flipped_with_all_cells": sum(f >= 1.0 for f in fractions),
        # the mean can favour the target before any single cell ranks it first
        "flipped_with_no_target_cell": sum(f == 0.0 for f in fractions),
        "final_fraction_median": statistics.median(r["final_fraction"] for r in done)
        if done
        else None,
        # counts per 10 % bin of the share at the flip; bin i holds [i/10, (i+1)/10)
        "fraction_at_success_histogram": np.histogram(fractions, bins=10, range=(0, 1))[0].tolist(),
        "max_mean_residual": max((r["max_mean_residual"] for r in done), default=None),
        "seconds_per_step_median": statistics.median(r["seconds_per_step"] for r in done)
        if done
        else None,
    }


def run_figure_command(threads: int, out: Path) -> dict:
    """The documented command in a fresh process with ``threads`` OpenMP threads."""
    executable = shutil.which("dense-readout", path=str(Path(sys.executable).parent))
    command = [executable or "dense-readout", *FIGURE_COMMAND.split()[1:], "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    record = json.loads((out / "chelsea_attack.json").read_text())
    cells = [step["target_cell_fraction"] * GRID_CELLS for step in record["per_step"]]
    if any(abs(c - round(c)) > 1e-3 for c in cells):  # a float32 mean of 0/1 values
        raise RuntimeError(f"target-cell fractions are not multiples of 1/{GRID_CELLS}")
    return {
        "threads": threads,
        "threads_recorded_by_command": record.get("threads"),
        "precision": record.get("precision"),
        "max_mean_residual": record["max_mean_residual"],
        "success_step": record["success_step"],
        "target_cells_per_step": [round(c) for c in cells],
        "predictions_per_step": [step["prediction"] for step in record["per_step"]],
        "seconds": round(seconds, 1),
    }


def check_figure(results: Path | None, figures: Path | None = None) -> dict:
    """Run the Fig. 11 command at 1 and at 2 threads and compare the trajectories.

    With ``figures``, the first run's three panels are copied there as the docs'
    ``attack_chelsea_{a,b,c}.png``.
    """
    with tempfile.TemporaryDirectory() as scratch:
        runs = [run_figure_command(n, Path(scratch) / f"threads{n}") for n in (1, 2)]
        for panel, suffix in (("a", "a_clean"), ("b", "b_attacked"), ("c", "c_steps")):
            if figures is not None:
                source = Path(scratch) / "threads1" / f"chelsea_attack_{suffix}.png"
                shutil.copy(source, figures / f"attack_chelsea_{panel}.png")
    keys = ("success_step", "target_cells_per_step", "predictions_per_step")
    first = runs[0]
    summary = {
        "documented_command": FIGURE_COMMAND + " --out out/attack",
        "grid_cells": GRID_CELLS,
        "runs": runs,
        "identical_across_threads": all(run[k] == first[k] for run in runs for k in keys),
        "success_step": first["success_step"],
        "target_cells_at_success": first["target_cells_per_step"][first["success_step"]],
        "target_cells_at_last_step": first["target_cells_per_step"][-1],
        "steps": len(first["target_cells_per_step"]) - 1,
    }
    if results is not None:
        write_results(results, summary)
    return summary


def figure_sentence(data: dict) -> str:
    """The docs' Fig. 11 paragraph, from ``attack_chelsea.json`` (``--check-figure``)."""
    n, step = data["grid_cells"], data["success_step"]
    at_flip, last = data["target_cells_at_success"], data["target_cells_at_last_step"]
    first = data["runs"][0]
    residual = max(run["max_mean_residual"] for run in data["runs"])
    threads = " and at ".join(str(run["threads"]) for run in data["runs"])
    same = "identical" if data["identical_across_threads"] else "**not** identical"
    cells = ", ".join(str(c) for c in first["target_cells_per_step"])
    return (
        f"With the embedded EfficientNet-Lite0 (exact: max |mean(Z) − logits| = "
        f'{residual:.1e} over all steps), the image becomes "sombrero" at **step {step}, '
        f"when {at_flip} of {n} cells ({100 * at_flip / n:.0f} %)** have sombrero as their "
        f"top-1; by step {data['steps']}, {last} of {n} cells do. Target cells at steps "
        f"0–{data['steps']}: {cells}. The command run at {threads} thread(s) gave "
        f"{same} trajectories (every step's prediction and target cells)."
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def study_table(data: dict) -> str:
    """The docs' study table and histogram, from ``attack_cells.json``."""
    flipped = data["reached_target"]
    steps, shares = data["success_step_quartiles"], data["fraction_at_success_quartiles"]
    first, last = data["success_step_min_max"]
    low, high = (_percent(v) for v in data["fraction_at_success_min_max"])
    q1, q2, q3 = (_percent(v) for v in shares)
    rows = {
        "images attacked / reached the target": f"{data['images_attacked']} / {flipped}",
        "step of the flip: quartiles (median)": (
            f"{steps[0]:g} / **{steps[1]:g}** / {steps[2]:g} (min {first}, max {last})"
        ),
        "share of target cells at the flip: quartiles (median)": (
            f"{q1} / **{q2}** / {q3} (min {low}, max {high})"
        ),
        "flipped with at most half of the cells on the target": (
            f"{data['flipped_with_at_most_half_the_cells']} of {flipped}"
        ),
        "flipped with *every* cell on the target": str(data["flipped_with_all_cells"]),
        "flipped with *no* cell whose top-1 is the target": (
            f"{data['flipped_with_no_target_cell']} of {flipped}"
        ),
        f"share of target cells after {data['steps']} steps (median)": (
            _percent(data["final_fraction_median"])
        ),
        "max \\|mean(Z) − logits\\| over all steps and images": (
            f"{data['max_mean_residual']:.1e}"
        ),
    }
    histogram = " | ".join(str(c) for c in data["fraction_at_success_histogram"])
    lines = [
        f"```bash\n{data['provenance']['command']}\n```",
        "",
        "| | |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in rows.items()),
        "",
        f"Share of target cells at the flip ({flipped} images):",
        "",
        "| share | " + " | ".join(f"{10 * i}–{10 * i + 10} %" for i in range(10)) + " |",
        "|---" * 11 + "|",
        f"| images | {histogram} |",
    ]
    return "\n".join(lines)


def timing_sentence(data: dict) -> str:
    """The docs' cost sentence, from ``attack_timing.json`` (``--timing N``)."""
    return (
        f"```bash\n{data['provenance']['command']}\n```\n\n"
        f"One PGD step in {data['dtype']} (forward with readout + backward to the input + "
        f"recording) takes **{data['pgd_step_over_forward_backward_median']:.2f}×** one "
        f"plain float32 forward+backward of the model (median over {data['images']} "
        "images, the two timed alternately in one process, "
        f"{data['provenance']['threads']} thread(s), load average "
        f"{data['provenance']['machine']['load_average_1min']})."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_root", type=Path, nargs="?", help="folder with ilsvrc_val_sample/")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    parser.add_argument("--out", type=Path, default=Path("runs/attack_cells"))
    parser.add_argument("--results", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--figures", type=Path, default=None, help="--check-figure: panels here")
    parser.add_argument(
        "--timing",
        type=int,
        default=0,
        metavar="N",
        help="only time PGD steps against forward+backward on N images, interleaved",
    )
    parser.add_argument(
        "--check-figure", action="store_true", help="Fig. 11 command at 1 and 2 threads"
    )
    args = parser.parse_args(argv)
    if args.data_root is None and not args.check_figure:
        parser.error("data_root is required (except with --check-figure)")
    return args


def run_study(model, preprocess, paths: list[Path], args) -> list[dict]:
    """Attack every image not yet in the log; one JSON line per image."""
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "attack_cells.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {row["image"] for row in rows}
    with log.open("a") as sink:
        for i, path in enumerate(tqdm(paths, desc="PGD per image")):
            if path.name in done:
                continue
            row = attack_one(model, preprocess, path, TARGETS[i % len(TARGETS)], args)
            row["dtype"] = args.dtype
            sink.write(json.dumps(row) + "\n")
            sink.flush()  # a kill loses at most the image being attacked
            rows.append(row)
    wanted = {path.name for path in paths}
    return [row for row in rows if row["image"] in wanted]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.check_figure:
        print(json.dumps(check_figure(args.results, args.figures), indent=2))
        return
    torch.set_num_threads(args.threads)
    model, preprocess, _, name = load_pretrained()
    paths = sorted((args.data_root / "ilsvrc_val_sample" / "val").glob("*.JPEG"))[: args.limit]
    if args.timing:
        timing = interleaved_step_ratio(model, preprocess, paths[: args.timing], args)
        if args.results is not None:
            write_results(args.results, timing, args.threads)
        print(json.dumps(timing))
        return
    rows = run_study(model, preprocess, paths, args)
    if any(row.get("dtype", "float32") != args.dtype for row in rows):
        raise SystemExit(f"{args.out} holds rows of another --dtype: use another --out")
    summary = summarise(rows)
    summary.update(model=name, steps=args.steps, eps=args.eps, alpha=args.alpha, targets=TARGETS)
    summary.update(seed=args.seed, dtype=args.dtype)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.results is not None:
        write_results(args.results, summary, args.threads)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
