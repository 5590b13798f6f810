"""Patch index on the ILSVRC sample: build rate vs forward-only, query latency, IVF-PQ recall.

With the embedded EfficientNet-Lite0 (224 px, 7×7 grid, 1280-d cells) over
``ilsvrc_val_sample/val`` (1,327 images ≈ 65k vectors), in one run:

* forward-only rate: the same loop as the build (decode, preprocess, batch of 32,
  forward to the grid) storing nothing, measured before and after the build (mean);
  build rate: ``build_index`` (extract + normalise + top-1 + atomic chunk writes +
  Flat merge), and their ratio (target ≥ 0.9);
* IVF-PQ merged from the same shards (hard links, no second extraction);
* query latency p50/p99 of single-vector searches (``--queries`` stored vectors,
  seeded) for Flat and IVF-PQ, and recall@10 of IVF-PQ against Flat on them;
* index size on disk (``index.faiss``; the shards with the raw vectors separately);
* the same build with 2 processes under ``torch.distributed.run`` (the CLI), and
  whether it answers the queries identically to the 1-process index.

Writes ``--out`` (JSON) and prints a Markdown table. Every process uses one thread.

    OMP_NUM_THREADS=1 python benchmarks/patch_index.py ../shared/data \\
        --work runs/patch_index --out docs/results/patch_index.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dense_readout import load_image, load_pretrained
from dense_readout.patches import GridExtractor, PatchIndex, build_index, merge_index


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def forward_only(paths: list[Path], extractor: GridExtractor, preprocess, batch: int) -> float:
    """Seconds for the build's loop without storing anything."""
    start = time.perf_counter()
    for first in range(0, len(paths), batch):
        tensors = [preprocess(load_image(p)) for p in paths[first : first + batch]]
        extractor(torch.stack(tensors))
    return time.perf_counter() - start


def latencies(index: PatchIndex, queries: np.ndarray, k: int = 10) -> tuple[dict, np.ndarray]:
    times, answers = [], []
    for row in queries:
        start = time.perf_counter()
        _, ids = index.engine.search(row[None], k)
        times.append(time.perf_counter() - start)
        answers.append(ids[0])
    ms = np.asarray(times) * 1e3
    stats = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    return stats, np.asarray(answers)


def recall_at(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, exact, strict=True)]))


def two_process_build(root: Path, out: Path, batch: int) -> float:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "-m", "dense_readout.cli", "index", "build", "--root", str(root), "--out", str(out),
        "--batch-size", str(batch), "--no-progress",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def image_root(data: Path, work: Path, limit: int | None) -> tuple[Path, list[Path]]:
    """The val folder, or a folder of links to its first ``limit`` images."""
    val = data / "ilsvrc_val_sample" / "val"
    paths = sorted(val.glob("*.JPEG"))
    if limit is None or limit >= len(paths):
        return val, paths
    root = work / "images"
    root.mkdir(parents=True, exist_ok=True)
    for path in paths[:limit]:
        if not (root / path.name).exists():
            (root / path.name).symlink_to(path.resolve())
    return root, sorted(root.glob("*.JPEG"))


def main() -> None:  # long: one measured run, step by step, then the report
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the shared data root (holds ilsvrc_val_sample)")
    parser.add_argument("--work", type=Path, default=Path("runs/patch_index"))
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-distributed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    for sub in ("flat", "ivf-pq", "two"):
        shutil.rmtree(args.work / sub, ignore_errors=True)
    root, paths = image_root(args.data, args.work, args.limit)
    report: dict = {"images": len(paths), "load_before": load_average(), "cpus": os.cpu_count()}
    model, preprocess, names, name = load_pretrained()
    extractor = GridExtractor(model)
    extractor(torch.zeros(1, 3, 224, 224))  # warm-up
    before = forward_only(paths, extractor, preprocess, args.batch_size)
    start = time.perf_counter()
    manifest = build_index(
        paths, args.work / "flat", extractor, preprocess, model_name=name,
        batch_size=args.batch_size, class_names=names, progress=False,
    )  # fmt: skip
    build_s = time.perf_counter() - start
    after = forward_only(paths, extractor, preprocess, args.batch_size)
    forward_s = (before + after) / 2
    report.update(
        vectors=manifest["counts"]["vectors"],
        forward_only_img_s=len(paths) / forward_s,
        forward_only_runs_s=[before, after],
        build_img_s=len(paths) / build_s,
        build_over_forward=forward_s / build_s,
    )
    shutil.copytree(args.work / "flat", args.work / "ivf-pq", copy_function=os.link)
    start = time.perf_counter()
    ivf_manifest = merge_index(args.work / "ivf-pq", index="ivf-pq")
    report["ivf_pq_merge_s"] = time.perf_counter() - start
    report["ivf_pq_params"] = ivf_manifest["index_params"]
    flat, ivf = PatchIndex.open(args.work / "flat"), PatchIndex.open(args.work / "ivf-pq")
    ids = flat.ids()
    chosen = np.random.default_rng(0).choice(ids, size=min(args.queries, len(ids)), replace=False)
    queries = flat.vectors(np.sort(chosen))
    report["flat"], exact = latencies(flat, queries)
    report["ivf_pq"], approximate = latencies(ivf, queries)
    report["recall_at_10"] = recall_at(approximate, exact)
    report["self_first_flat"] = float(np.mean(exact[:, 0] == np.sort(chosen)))
    report["flat"]["size_mb"] = (args.work / "flat" / "index.faiss").stat().st_size / 1e6
    report["ivf_pq"]["size_mb"] = (args.work / "ivf-pq" / "index.faiss").stat().st_size / 1e6
    shards = (args.work / "flat" / "shards").rglob("*.npy")
    report["shards_mb"] = sum(p.stat().st_size for p in shards) / 1e6
    if not args.skip_distributed:
        two_s = two_process_build(root, args.work / "two", args.batch_size)
        two = PatchIndex.open(args.work / "two")
        report["two_process_build_img_s"] = len(paths) / two_s
        _, two_answers = latencies(two, queries)
        report["two_process_identical_answers"] = float(np.mean((two_answers == exact).all(1)))
        report["two_process_max_vector_diff"] = float(
            np.abs(two.vectors(ids) - flat.vectors(ids)).max()
        )
    report["load_after"] = load_average()
    print_table(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


def print_table(report: dict) -> None:
    rows = [
        ("images / vectors", f"{report['images']} / {report['vectors']}"),
        ("forward-only rate", f"{report['forward_only_img_s']:.1f} img/s"),
        ("build rate (1 process, Flat)", f"{report['build_img_s']:.1f} img/s"),
        ("build / forward-only", f"{report['build_over_forward']:.3f}"),
        ("IVF-PQ merge (train + add)", f"{report['ivf_pq_merge_s']:.1f} s {report['ivf_pq_params']}"),
        ("query p50 / p99, Flat", f"{report['flat']['p50_ms']:.2f} / {report['flat']['p99_ms']:.2f} ms"),
        ("query p50 / p99, IVF-PQ", f"{report['ivf_pq']['p50_ms']:.2f} / {report['ivf_pq']['p99_ms']:.2f} ms"),
        ("recall@10 IVF-PQ vs Flat", f"{report['recall_at_10']:.3f}"),
        ("index size Flat / IVF-PQ", f"{report['flat']['size_mb']:.1f} / {report['ivf_pq']['size_mb']:.1f} MB"),
        ("shards (raw vectors)", f"{report['shards_mb']:.1f} MB"),
    ]  # fmt: skip
    if "two_process_build_img_s" in report:
        rows += [
            ("build rate, 2 processes", f"{report['two_process_build_img_s']:.1f} img/s"),
            ("2-process answers = 1-process", f"{report['two_process_identical_answers']:.3f}"),
            ("max |vector difference|", f"{report['two_process_max_vector_diff']:.2e}"),
        ]
    rows.append(
        ("load average before / after", f"{report['load_before']} / {report['load_after']}")
    )
    print("| measure | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
