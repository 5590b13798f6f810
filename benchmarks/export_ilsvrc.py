"""Export of the ILSVRC sample: throughput vs forward-only, store size, flat memory, kill+resume.

With the embedded EfficientNet-Lite0 (its own preprocessing, 7×7 grid, 1000 classes)
over ``ilsvrc_val_sample`` at ``--dtype float16``, each size in its own child process:

* forward-only rate: the export's own loop (same DataLoader: decode + preprocess in
  ``--workers`` processes, batches of ``--batch-size``) with ``model(x)`` and nothing
  stored, measured before and after the export (mean); export rate: ``export_dataset``
  (readout + float16 maps + logits + geometry, atomic chunk writes); their ratio;
* store size on disk per exported image;
* peak RSS of the exporting process, sampled every second against the images done
  (``/proc/self/status`` VmHWM): at ``--subset`` images and at the end, flat if memory
  does not grow with the dataset;
* with ``--paired`` (instead of the above): the export alone, ``model(x)`` timed on
  each batch just before its readout (robust to load drift), and the ratio of the
  loop with ``model(x)`` to the export;
* with ``--kill-resume``: the same export in a child process SIGKILLed after a third
  of the batches, rerun (resumed), and compared file by file with the uninterrupted store.

Writes ``--json`` and prints a summary. The machine is shared: the ratio, measured in
one process, is what to read; absolute rates depend on its load (recorded).

    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/export_ilsvrc.py ../shared/data \\
        --work runs/export --json docs/results/export_ilsvrc.json [--limit N] [--kill-resume]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results
from dense_readout import DenseReadout, load_pretrained
from dense_readout.export import ExportConfig, export_dataset, open_source
from dense_readout.export.items import ExportItems, make_loader


def forward_only(model, source, preprocess, batch_size: int, workers: int) -> float:
    """Seconds for the export's loop with ``model(x)`` and nothing stored."""
    count = len(source.paths)
    batches = [list(range(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]
    items = ExportItems(source.paths, preprocess, exif_transpose=False)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in make_loader(items, batches, workers):
            model(batch["x"][batch["status"] == 1])
    return time.perf_counter() - start


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"process": round(own, 1), "workers": round(children, 1)}


def _status_kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


class RssCurve(threading.Thread):
    """Samples (images done, peak RSS, RSS) of this process every second during the export."""

    def __init__(self, store: Path, batch_size: int) -> None:
        super().__init__(daemon=True)
        self.store, self.batch_size = store, batch_size
        self.points: list[tuple[int, float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            done = len(list((self.store / "status").glob("[0-9]*"))) * self.batch_size
            peak, now = _status_kib("VmHWM") / 1024, _status_kib("VmRSS") / 1024
            self.points.append((done, round(peak, 1), round(now, 1)))


class PairedForward:
    """Wraps the export's ``readout_maps``: times ``model(x)`` on the same batch just before.

    On a machine whose load drifts, a forward-only pass run minutes apart from the export
    measures the load as much as the code; the forward timed beside every readout does not.
    """

    def __init__(self, model, readout_maps) -> None:
        self.model, self.readout_maps = model, readout_maps
        self.forward_s = 0.0

    def __call__(self, readout, x, *args, **kwargs):
        tic = time.perf_counter()
        with torch.inference_mode():
            self.model(x)
        self.forward_s += time.perf_counter() - tic
        return self.readout_maps(readout, x, *args, **kwargs)


def paired(args: argparse.Namespace, model, source, preprocess, readout, config, info) -> dict:
    """Export with a forward-only pass timed beside each batch's readout."""
    from dense_readout.export import writer

    store = Path(args.store + "-paired")
    shutil.rmtree(store, ignore_errors=True)
    wrapper = PairedForward(model, writer.readout_maps)
    writer.readout_maps = wrapper
    try:
        tic = time.perf_counter()
        summary = export_dataset(source, store, readout, preprocess, config, info)
        wall = time.perf_counter() - tic - wrapper.forward_s  # the export without the extra pass
    finally:
        writer.readout_maps = wrapper.readout_maps
    readout_s = summary["timing"]["forward_s"] - wrapper.forward_s  # the wrapper's time held both
    forward_only_wall = wall - readout_s + wrapper.forward_s  # same loop, model(x) instead
    return {
        "export_wall_s": round(wall, 2),
        "readout_s": round(readout_s, 2),
        "paired_forward_s": round(wrapper.forward_s, 2),
        "readout_to_forward": round(readout_s / wrapper.forward_s, 3),
        "ratio_export_to_forward_only": round(forward_only_wall / wall, 3),
    }


def child(args: argparse.Namespace) -> None:
    """One measurement in this process: forward, export, forward; prints one JSON line."""
    model, preprocess, names, name = load_pretrained()
    source = open_source(Path(args.data) / "ilsvrc_val_sample", "ilsvrc")
    if args.limit:
        source.paths, source.labels = source.paths[: args.limit], source.labels[: args.limit]
    source.class_names = tuple(names)
    store = Path(args.store)
    config = ExportConfig(
        dtype=args.dtype, batch_size=args.batch_size, workers=args.workers, progress=False
    )
    readout, info = DenseReadout(model), {"model": name}
    if args.export_only:  # the kill/resume run: export (resuming if the store exists)
        export_dataset(source, store, readout, preprocess, config, info)
        return
    if args.paired:
        result = paired(args, model, source, preprocess, readout, config, info)
        print(json.dumps({"images": len(source.paths), **result, "peak_rss_mib": peak_rss_mb()}))
        return
    shutil.rmtree(store, ignore_errors=True)
    before = forward_only(model, source, preprocess, args.batch_size, args.workers)
    curve = RssCurve(store, args.batch_size)
    curve.start()
    tic = time.perf_counter()
    summary = export_dataset(source, store, readout, preprocess, config, info)
    export_s = time.perf_counter() - tic
    curve.stop.set()
    after = forward_only(model, source, preprocess, args.batch_size, args.workers)
    count = len(source.paths)
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    forward_rate = count / ((before + after) / 2)
    print(
        json.dumps(
            {
                "images": count,
                "counts": summary["counts"],
                "forward_only_s": [round(before, 2), round(after, 2)],
                "export_s": round(export_s, 2),
                "export_forward_s": round(summary["timing"]["forward_s"], 2),
                "forward_only_images_per_s": round(forward_rate, 2),
                "export_images_per_s": round(count / export_s, 2),
                "ratio_export_to_forward_only": round((count / export_s) / forward_rate, 3),
                "store_bytes": size,
                "store_bytes_per_image": round(size / max(1, summary["counts"]["exported"])),
                "peak_rss_mib": peak_rss_mb(),
                "rss_curve_images_peak_now_mib": curve.points,
                "load_average_after": [round(v, 2) for v in os.getloadavg()],
            }
        )
    )


def run_child(args: argparse.Namespace, limit: int, store: Path) -> dict:
    command = [sys.executable, __file__, args.data, "--child", "--store", str(store)]
    command += ["--limit", str(limit), "--batch-size", str(args.batch_size)]
    command += ["--workers", str(args.workers), "--dtype", args.dtype]
    command += ["--paired"] if args.paired else []
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def _differing_files(store: Path, reference: Path) -> tuple[dict[str, bytes], list[str]]:
    """``store``'s files, and the names whose bytes differ from ``reference`` (or are missing)."""
    files = {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    wanted = {
        str(p.relative_to(reference)): p.read_bytes() for p in reference.rglob("*") if p.is_file()
    }
    return files, sorted(k for k in set(files) | set(wanted) if files.get(k) != wanted.get(k))


def kill_and_resume(args: argparse.Namespace, reference: Path) -> dict:
    """SIGKILL a CLI export after a third of its batches, resume it, compare with ``reference``."""
    store = Path(args.work) / "killed"
    shutil.rmtree(store, ignore_errors=True)
    command = [sys.executable, __file__, args.data, "--child", "--export-only"]
    command += ["--store", str(store), "--limit", str(args.limit), "--dtype", args.dtype]
    command += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    batches = len(list((reference / "status").glob("[0-9]*")))
    process = subprocess.Popen(command)
    while len(list((store / "status").glob("[0-9]*"))) < batches // 3:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = len(list((store / "status").glob("[0-9]*")))
    subprocess.run(command, check=True)
    files, differ = _differing_files(store, reference)
    return {
        "batches": batches,
        "batches_done_at_kill": at_kill,
        "files": len(files),
        "files_differing_from_uninterrupted": differ[:20],
        "equal": not differ,
    }


def two_processes(args: argparse.Namespace, reference: Path) -> dict:
    """The same export by two processes (torch.distributed.run, gloo), compared with ``reference``."""
    store = Path(args.work) / "two-processes"
    shutil.rmtree(store, ignore_errors=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += [__file__, args.data, "--child", "--export-only", "--store", str(store)]
    command += ["--limit", str(args.limit), "--dtype", args.dtype]
    command += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    tic = time.perf_counter()
    # each process at the thread count of the 1-process run: the same batches (rank r takes
    # every other one) at the same threads must give the same bytes
    threads = str(torch.get_num_threads())
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    wall = time.perf_counter() - tic
    files, differ = _differing_files(store, reference)
    return {
        "processes": 2,
        "wall_s": round(wall, 2),
        "files": len(files),
        "files_differing_from_one_process": differ[:20],
        "equal": not differ,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the shared data root (holds ilsvrc_val_sample/)")
    parser.add_argument("--work", default="runs/export")
    parser.add_argument("--json", default="docs/results/export_ilsvrc.json")
    parser.add_argument("--subset", type=int, default=300)
    parser.add_argument("--limit", type=int, default=0, help="images (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--kill-resume", action="store_true")
    parser.add_argument(
        "--two-processes",
        action="store_true",
        help="also export with 2 processes (torch.distributed.run) and compare file by file",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="only the export with a forward timed beside each batch",
    )
    parser.add_argument(
        "--two-processes-only",
        action="store_true",
        help="only the 2-process export, compared with the store of an earlier run in --work",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.two_processes_only:  # add the 2-process comparison to an earlier run's JSON
        payload = json.loads(Path(args.json).read_text(encoding="utf-8"))
        payload["main_run_provenance"] = payload.pop("provenance", None)
        payload["two_processes"] = two_processes(args, work / "all")
        write_results(args.json, payload)
        return
    if args.paired:
        result = run_child(args, args.limit, work / "all")
        write_results(args.json, {"model": "tf_efficientnet_lite0 (embedded)", "paired": result})
        return
    run = run_child(args, args.limit, work / "all")
    curve = [point for point in run["rss_curve_images_peak_now_mib"] if point[0] > 0]
    early = next((p for p in curve if p[0] >= args.subset), curve[0] if curve else None)
    payload = {
        "model": "tf_efficientnet_lite0 (embedded), its own preprocessing",
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "run": run,
        "peak_rss_mib_at_subset": early,
        "peak_rss_mib_at_end": curve[-1] if curve else None,
        "peak_rss_growth_after_subset_mib": round(curve[-1][1] - early[1], 1) if early else None,
    }
    write_results(args.json, payload)
    if args.kill_resume:
        payload["kill_resume"] = kill_and_resume(args, work / "all")
        write_results(args.json, payload)
    if args.two_processes:
        payload["two_processes"] = two_processes(args, work / "all")
        write_results(args.json, payload)


if __name__ == "__main__":
    main()


def _rss_by_batch(run: dict) -> list[tuple[int, float]]:
    """The highest sampled RSS for each number of images done."""
    highest: dict[int, float] = {}
    for done, _, now in run["rss_curve_images_peak_now_mib"]:
        highest[done] = max(highest.get(done, 0.0), now)
    return sorted(highest.items())


def _spread(points: list, most: int = 9) -> list:
    """At most ``most`` of ``points``, evenly spaced, the first and the last included."""
    if len(points) <= most:
        return points
    step = (len(points) - 1) / (most - 1)
    return [points[round(i * step)] for i in range(most)]


def export_table(data: dict) -> str:
    """The docs' table (docs/export.md) from the JSON this script writes."""
    run = data["run"]
    forward = run["forward_only_s"]
    early, end = data["peak_rss_mib_at_subset"], data["peak_rss_mib_at_end"]
    rows = [
        ("images (ILSVRC sample, first N)", f"{run['images']}"),
        (
            "forward-only (same loader), images/s",
            f"{run['forward_only_images_per_s']} (passes of {forward[0]} s and {forward[1]} s)",
        ),
        ("export, images/s", f"{run['export_images_per_s']} ({run['export_s']} s)"),
        ("**export / forward-only**", f"**{run['ratio_export_to_forward_only']}**"),
        ("store size per image", f"{run['store_bytes_per_image'] / 1000:.1f} kB ({data['dtype']})"),
        (
            "RSS, highest while the batch after N images ran (N: MiB)",
            ", ".join(f"{done}: {rss:.0f}" for done, rss in _spread(_rss_by_batch(run))),
        ),
        (
            "peak RSS of the process (incl. the forward-only pass before)",
            f"{early[1]:.0f} MiB at {early[0]} images, {end[1]:.0f} MiB at {end[0]} images",
        ),
        (
            "machine load (1-min average, 2 cores)",
            # the main run's load (a later --two-processes-only run keeps it aside)
            f"{(data.get('main_run_provenance') or data['provenance'])['machine']['load_average_1min']}",
        ),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if "two_processes" in data:
        two = data["two_processes"]
        lines.append(
            f"| the same export by 2 processes (torch.distributed.run, {two['wall_s']} s) "
            f"| store equal to the 1-process one, file by file: {two['equal']} |"
        )
    if "kill_resume" in data:
        kill = data["kill_resume"]
        lines.append(
            f"| SIGKILL after {kill['batches_done_at_kill']} of {kill['batches']} batches, resume "
            f"| store equal to the uninterrupted one: {kill['equal']} |"
        )
    return "\n".join(lines)


def paired_table(data: dict) -> str:
    """The docs' table of the ``--paired`` run (docs/export.md)."""
    run = data["paired"]
    rows = [
        ("images (ILSVRC sample, first N)", f"{run['images']}"),
        ("export wall time (decode, readout, float16 writes)", f"{run['export_wall_s']} s"),
        ("readout, summed over batches", f"{run['readout_s']} s"),
        ("`model(x)` on the same batches, just before", f"{run['paired_forward_s']} s"),
        ("readout / forward", f"{run['readout_to_forward']}"),
        (
            "**export / forward-only loop (throughput ratio)**",
            f"**{run['ratio_export_to_forward_only']}**",
        ),
        (
            "machine load (1-min average, 2 cores)",
            # the main run's load (a later --two-processes-only run keeps it aside)
            f"{(data.get('main_run_provenance') or data['provenance'])['machine']['load_average_1min']}",
        ),
    ]
    lines = ["| measure | value |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])
