"""How long ``dense-readout --help`` takes, as a ratio to starting Python itself.

In one loop, ``--runs`` times each (interleaved, so that a change of machine load
hits all of them alike): ``python -c pass``, ``dense-readout --help``,
``dense-readout explain --help`` and ``dense-readout explain missing.jpg`` (an
argument error); optionally (``--reference N``, in the first N rounds only: it is
slow) ``python -c "import torch, timm"``, what every command imported before the CLI
became lazy. Prints and writes the medians
and their ratios to ``python -c pass``, of wall time and of CPU time (user + system, what
the command costs when the machine is busy) (``docs/results/cli_startup.json``).

    nice -n 10 python benchmarks/cli_startup.py --runs 11 --reference 2
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "python -c 'import torch, timm'"


def commands(reference: bool) -> dict[str, tuple[list[str], int]]:
    """Name → (argv, expected exit status); the console script when it is installed."""
    script = shutil.which("dense-readout", path=str(Path(sys.executable).parent))
    cli = [script] if script else [sys.executable, "-m", "dense_readout.cli"]
    cases = {
        "python -c pass": ([sys.executable, "-c", "pass"], 0),
        "dense-readout --help": ([*cli, "--help"], 0),
        "dense-readout explain --help": ([*cli, "explain", "--help"], 0),
        "dense-readout explain missing.jpg": ([*cli, "explain", "missing.jpg"], 1),
    }
    if reference:
        cases[REFERENCE] = ([sys.executable, "-c", "import torch, timm"], 0)
    return cases


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    cases: dict[str, tuple[list[str], int]], runs: int, reference_runs: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU (user + system) seconds of each case, ``runs`` rounds, the cases
    interleaved in every round (the reference only in the first ``reference_runs``).

    CPU time is what the command costs; wall time also holds the waits of a busy machine.
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as folder:  # explain missing.jpg writes nothing there
        for round_ in range(runs + 1):
            for name, (argv, status) in cases.items():
                if name == REFERENCE and round_ > reference_runs:
                    continue
                start, start_cpu = time.perf_counter(), _cpu_of_children()
                done = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
                elapsed = time.perf_counter() - start
                used = _cpu_of_children() - start_cpu
                if done.returncode != status:  # a crash is fast: never time one
                    raise SystemExit(f"{name}: exit status {done.returncode}\n{done.stderr}")
                if round_:  # round 0 warms the file cache and is not counted
                    times[name].append(elapsed)
                    cpu[name].append(used)
            print(f"round {round_}/{runs}", file=sys.stderr, flush=True)
    return times, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument(
        "--reference",
        type=int,
        default=0,
        metavar="N",
        help="also time python -c 'import torch, timm', in the first N rounds (default 0)",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "cli_startup.json"))
    args = parser.parse_args()
    times, cpu = measure(commands(args.reference > 0), args.runs, args.reference)
    base = statistics.median(times["python -c pass"])
    base_cpu = statistics.median(cpu["python -c pass"])
    rows = {
        name: {
            "median_s": round(statistics.median(values), 4),
            "min_s": round(min(values), 4),
            "max_s": round(max(values), 4),
            "ratio_to_python": round(statistics.median(values) / base, 2),
            "cpu_median_s": round(statistics.median(cpu[name]), 4),
            "cpu_ratio_to_python": round(statistics.median(cpu[name]) / base_cpu, 2),
        }
        for name, values in times.items()
    }
    for name, row in rows.items():
        print(
            f"{name:36s} wall {row['median_s']:.3f} s = {row['ratio_to_python']:.2f}x, "
            f"cpu {row['cpu_median_s']:.3f} s = {row['cpu_ratio_to_python']:.2f}x"
        )
    counts = {name: len(values) for name, values in times.items()}
    write_results(args.out, {"runs": counts, "cases": rows}, threads=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
