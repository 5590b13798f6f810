"""Dense readout time and peak memory vs a plain forward pass, measured side by side.

For each model and batch size, one subprocess per mode ("forward" = ``model(x)``,
"readout" = ``DenseReadout(model)(x)``) measures the peak resident-memory increase
over the state after loading the model and input; the timings interleave the two
modes in one process and report medians, so load from other processes affects
both alike. Weights are random (speed does not depend on their values).

    python benchmarks/speed.py                       # the docs table
    python benchmarks/speed.py --models resnet50 --batches 1 --repeats 3
    python benchmarks/speed.py --models tv:googlenet tv:inception_v3

Names are timm models; ``tv:<name>`` is a torchvision model (``weights=None``), e.g.
GoogLeNet and Inception-v3, which the structural adapter reads out. ``--results PATH``
writes the rows as JSON (with the command, versions, threads and load);
:func:`markdown_table` renders the docs' table from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

DEFAULT_MODELS = [
    "resnet50",
    "tf_efficientnet_lite0",
    "convnext_tiny",
    "swin_tiny_patch4_window7_224",
    "vit_small_patch16_224",
    "tv:googlenet",  # torchvision, structural adapter
    "tv:inception_v3",  # torchvision, structural adapter
]


def _build(name: str):
    from dense_readout import DenseReadout

    if name.startswith("tv:"):
        import torchvision

        aux = name in ("tv:googlenet", "tv:inception_v3")
        kwargs = {"aux_logits": False, "init_weights": False} if aux else {}
        model = getattr(torchvision.models, name[3:])(weights=None, **kwargs).eval()
    else:
        import timm

        model = timm.create_model(name, pretrained=False).eval()
    return model, DenseReadout(model)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    """Reset VmHWM (peak RSS) to the current RSS (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def measure_memory(name: str, batch: int, mode: str) -> float:
    """Peak RSS increase (MB) over the resident model and input, during one call in
    this fresh process (no warm-up, so first-call set-up counts in both modes alike)."""
    model, readout = _build(name)
    x = torch.randn(batch, 3, 224, 224)
    _reset_peak()
    before = _status_mb("VmRSS")
    with torch.no_grad():
        model(x) if mode == "forward" else readout(x)
    return _status_mb("VmHWM") - before


def measure_time(name: str, batch: int, repeats: int) -> dict[str, float]:
    """Median wall time and median CPU time (all threads of this process) per mode.

    CPU time is far less sensitive than wall time to other processes competing for
    the cores, so on a shared machine its ratio is the more trustworthy one.
    """
    model, readout = _build(name)
    x = torch.randn(batch, 3, 224, 224)
    samples: dict[str, list[float]] = {
        "forward": [],
        "readout": [],
        "forward_cpu": [],
        "readout_cpu": [],
    }
    with torch.no_grad():
        model(x), readout(x)  # warm-up
        for repeat in range(repeats):
            # alternate the order so drift in machine load hits both modes alike
            order = [("forward", model), ("readout", readout)]
            for mode, fn in order if repeat % 2 == 0 else order[::-1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                fn(x)
                samples[mode].append(time.perf_counter() - start)
                samples[mode + "_cpu"].append(time.process_time() - start_cpu)
    return {key: statistics.median(values) for key, values in samples.items()}


def _memory_in_subprocess(name: str, batch: int, mode: str) -> float:
    code = (
        "import sys, json; sys.path.insert(0, 'benchmarks'); import speed; "
        f"print(json.dumps(speed.measure_memory({name!r}, {batch}, {mode!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--results", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, CPU, 224 px, median of {args.repeats}"
    )
    print(
        "| model | batch | forward wall (ms) | readout wall (ms) | wall ratio | forward CPU (ms) | readout CPU (ms) "
        "| CPU ratio | forward peak MB | readout peak MB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.models:
        for batch in args.batches:
            t = measure_time(name, batch, args.repeats)
            if args.no_memory:
                mem_f = mem_r = float("nan")
            else:
                mem_f = _memory_in_subprocess(name, batch, "forward")
                mem_r = _memory_in_subprocess(name, batch, "readout")
            ratio_mem = mem_r / mem_f if mem_f > 0 else float("nan")
            rows.append(
                dict(
                    model=name,
                    batch=batch,
                    forward_mb=mem_f,
                    readout_mb=mem_r,
                    **{f"{key}_ms": value * 1e3 for key, value in t.items()},
                )
            )
            print(
                f"| {name} | {batch} | {t['forward'] * 1e3:.1f} | {t['readout'] * 1e3:.1f} | "
                f"{t['readout'] / t['forward']:.3f} | {t['forward_cpu'] * 1e3:.1f} | {t['readout_cpu'] * 1e3:.1f} | "
                f"{t['readout_cpu'] / t['forward_cpu']:.3f} | {mem_f:.1f} | {mem_r:.1f} | {ratio_mem:.2f} |",
                flush=True,
            )
    print(json.dumps(rows))
    if args.results:
        from _results import write_results

        payload = {"repeats": args.repeats, "size": 224, "rows": rows}
        write_results(args.results, payload, args.threads)
    return 0


def _ratio(numerator: float, denominator: float, digits: int) -> str:
    ok = denominator > 0 and numerator == numerator  # NaN when memory was skipped
    return f"{numerator / denominator:.{digits}f}" if ok else "—"


def markdown_table(data: dict) -> str:
    """The docs' table from the ``--results`` JSON: medians, ratios readout/forward."""
    meta = data["provenance"]
    lines = [
        (
            f"torch {meta['versions']['torch']}, {meta['threads']} thread(s), CPU, "
            f"{data['size']} px, median of {data['repeats']}, load average "
            f"{meta['machine']['load_average_1min']} at the end on {meta['machine']['cores']} cores"
        ),
        "",
        (
            "| model | batch | forward wall (ms) | readout wall (ms) | wall ratio | forward CPU (ms) "
            "| readout CPU (ms) | CPU ratio | forward peak MB | readout peak MB | memory ratio |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        memory = (
            f"{r['forward_mb']:.1f} | {r['readout_mb']:.1f}"
            if r["forward_mb"] == r["forward_mb"]
            else "— | —"
        )
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['forward_ms']:.1f} | {r['readout_ms']:.1f} | "
            f"{_ratio(r['readout_ms'], r['forward_ms'], 3)} | {r['forward_cpu_ms']:.1f} | "
            f"{r['readout_cpu_ms']:.1f} | {_ratio(r['readout_cpu_ms'], r['forward_cpu_ms'], 3)} | "
            f"{memory} | {_ratio(r['readout_mb'], r['forward_mb'], 2)} |"
        )
    return "\n".join(lines)


def command_block(data: dict) -> str:
    """The command that wrote the JSON, as the docs show it."""
    return f"```bash\n{data['provenance']['command']}\n```"


def ratio_ranges(data: dict) -> str:
    """The docs' one-line summary: the range of each ratio over the table's rows."""
    parts = []
    for label, key in (("wall-time", ""), ("CPU-time", "_cpu")):
        ratios = [r[f"readout{key}_ms"] / r[f"forward{key}_ms"] for r in data["rows"]]
        parts.append(f"{label} ratios {min(ratios):.2f}–{max(ratios):.2f}")
    return "Readout / forward over these rows: " + ", ".join(parts) + "."


if __name__ == "__main__":
    sys.exit(main())
