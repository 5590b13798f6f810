"""Wall time of the dense readout vs the CAM family, and the docs' side-by-side figure.

One run, the embedded ImageNet EfficientNet-Lite0 (``load_pretrained()``), CPU.
Timings interleave the methods with a plain ``model(x)`` forward pass in every
round (so drift in machine load hits all of them alike) and report medians; the
ratio is method time / plain-forward time on the same batch. Each method makes
the map of one class per image (the image's top class); "maps per call" says how
many class maps one call produces (the readout: all 1000).

The "slow" methods (ScoreCAM, AblationCAM: one forward pass per channel, 1280
here) are timed once, without a warm-up call, on a smaller batch
(``--slow-batch``), against a plain forward of that batch.

    python benchmarks/compare_speed.py                                     # docs table + figure
    python benchmarks/compare_speed.py --repeats 2 --slow-methods ""       # quick

``--results PATH`` writes the table as JSON (with the command, versions, threads and
load); :func:`markdown_table` renders the docs' table from it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

FAST = [
    "dense-readout",
    "cam",
    "dense-readout-cam",
    "gradcam",
    "hirescam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "eigencam",
    "eigengradcam",
    "layergradcam",
]
SLOW = ["scorecam", "ablationcam"]
FIGURE = [
    "dense-readout",
    "gradcam",
    "hirescam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "eigencam",
    "layergradcam",
]


def photos(preprocess, count: int) -> torch.Tensor:
    """chelsea and coffee first, then other scikit-image RGB photos, cycled to ``count``."""
    import skimage.data as data

    names = [
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
    ]
    tensors = [preprocess(Image.fromarray(getattr(data, name)()).convert("RGB")) for name in names]
    return torch.stack([tensors[i % len(tensors)] for i in range(count)])


def forward_seconds(model, x) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - start


def time_methods(model, readout, x, targets, methods, repeats, warm_up=True):
    from dense_readout.compare import compare

    times = {name: [] for name in methods}
    forward = []
    failures = {}
    classes = {}
    forward_seconds(model, x)  # warm-up of the plain forward
    if warm_up:
        compare(model, x, targets, methods=methods, readout=readout)  # hooks, allocator
    for _ in range(repeats):
        forward.append(forward_seconds(model, x))
        for name in methods:
            result = compare(model, x, targets, methods=[name], readout=readout)
            if result.failures:
                failures.update(result.failures)
                continue
            times[name].append(result.seconds[name])
            classes[name] = result.results[name].classes_per_call
        forward.append(forward_seconds(model, x))
    return (
        statistics.median(forward),
        {n: statistics.median(t) for n, t in times.items() if t},
        classes,
        failures,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default=",".join(FAST))
    parser.add_argument("--slow-methods", default=",".join(SLOW))
    parser.add_argument("--slow-batch", type=int, default=1)
    parser.add_argument("--figure", default="docs/figures/compare_chelsea_coffee.png")
    parser.add_argument("--figure-methods", default=",".join(FIGURE))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from dense_readout import DenseReadout, load_pretrained
    from dense_readout.compare import compare

    model, preprocess, names, model_name = load_pretrained()
    readout = DenseReadout(model)
    print(
        f"model: {model_name} (embedded ImageNet weights), preprocessing: shorter side "
        f"{preprocess.resize}, crop {preprocess.crop}, mean/std {preprocess.mean}/{preprocess.std}; "
        f"threads: {torch.get_num_threads()}; torch {torch.__version__}"
    )

    if args.figure:
        x = photos(preprocess, 2)
        result = compare(
            model,
            x,
            None,
            methods=[m for m in args.figure_methods.split(",") if m],
            readout=readout,
            display=preprocess.denormalize,
        )
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        result.save_figure(args.figure, class_names=names)
        print(
            f"figure: {args.figure} (targets: {[names[int(t)] for t in result.targets]}; "
            f"failures: {result.failures or 'none'})"
        )

    rows = []
    x = photos(preprocess, args.batch)
    with torch.no_grad():
        targets = model(x).argmax(1)
    methods = [m for m in args.methods.split(",") if m]
    failures: dict = {}
    if methods:
        forward, seconds, classes, failures = time_methods(
            model, readout, x, targets, methods, args.repeats
        )
        print(
            f"\nplain forward, batch {args.batch}: {forward * 1000:.1f} ms (median of {2 * args.repeats})"
        )
        for name in methods:
            if name in seconds:
                rows.append(
                    (
                        name,
                        args.batch,
                        seconds[name],
                        seconds[name] / forward,
                        classes[name],
                        args.repeats,
                    )
                )
        print_table(rows, failures)  # now, before the slow methods
    slow = [m for m in args.slow_methods.split(",") if m]
    if slow:  # one timed call each, no warm-up call (each costs ~1280 forward passes per image)
        xs, ts = x[: args.slow_batch], targets[: args.slow_batch]
        slow_forward, slow_seconds, slow_classes, slow_failures = time_methods(
            model, readout, xs, ts, slow, 1, warm_up=False
        )
        failures.update(slow_failures)
        print(f"plain forward, batch {args.slow_batch}: {slow_forward * 1000:.1f} ms")
        for name in slow:
            if name in slow_seconds:
                rows.append(
                    (
                        name,
                        args.slow_batch,
                        slow_seconds[name],
                        slow_seconds[name] / slow_forward,
                        slow_classes[name],
                        1,
                    )
                )
        print_table(rows, failures)
    if args.results:
        from _results import write_results

        payload = {
            "model": model_name,
            "batch": args.batch,
            "forward_seconds": forward if methods else None,
            "rows": [dict(zip(ROW_KEYS, row, strict=True)) for row in rows],
            "failures": {name: str(error) for name, error in failures.items()},
        }
        write_results(args.results, payload, args.threads)
    return 0


ROW_KEYS = ("method", "batch", "seconds", "ratio_to_forward", "class_maps_per_call", "repeats")


def markdown_table(data: dict) -> str:
    """The docs' table from the ``--results`` JSON, fastest first."""
    lines = [
        (
            f"Plain forward, batch {data['batch']}: {data['forward_seconds'] * 1000:.1f} ms "
            f"({data['provenance']['threads']} threads, load average "
            f"{data['provenance']['machine']['load_average_1min']} at the end)."
        ),
        "",
        (
            "| method | batch | seconds | × plain forward (same batch) | class maps per call |"
            " repeats |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(data["rows"], key=lambda row: row["ratio_to_forward"]):
        lines.append(
            f"| {row['method']} | {row['batch']} | {row['seconds']:.3f} | "
            f"{row['ratio_to_forward']:.2f} | {row['class_maps_per_call']} | {row['repeats']} |"
        )
    lines += [
        f"| {name} | — | — | — | — | failed: {error} |" for name, error in data["failures"].items()
    ]
    return "\n".join(lines)


def print_table(rows, failures) -> None:
    print(
        "\n| method | batch | seconds | × plain forward (same batch) | class maps per call | repeats |"
    )
    print("|---|---|---|---|---|---|")
    for name, batch, secs, ratio, maps, repeats in sorted(rows, key=lambda row: row[3]):
        print(f"| {name} | {batch} | {secs:.3f} | {ratio:.2f} | {maps} | {repeats} |", flush=True)
    for name, error in failures.items():
        print(f"| {name} | — | — | — | — | failed: {error} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
