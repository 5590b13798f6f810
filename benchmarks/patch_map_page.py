"""Size and speed of the patch map page (paper A.8, Fig. 10) at the expected scale.

Takes ``--points`` cells of a 7×7 grid over the first ``--images`` images of
``ilsvrc_val_sample/val`` (sorted by name; cells drawn at random, seed 0), coloured by
the image's ImageNet class, with coordinates from a 2-D Gaussian mixture (page size and
drawing speed do not depend on where the coordinates came from; ``--umap`` projects
random 64-d vectors with :func:`umap_coords` instead) and 10 random neighbours each.
Prints the page size per point and per image, the time to write it, and with
``--browser`` the time headless Chromium takes from navigation to the page's ready
flag and the mean time of one full redraw of the canvas.

    python benchmarks/patch_map_page.py ../shared/data --points 3000 --images 1000 --browser
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dense_readout.page.patch_map import MapPoint, umap_coords, write_map_page


def _classes(root: Path) -> dict[str, str]:
    folder = root / "ilsvrc_val_sample"
    names = [
        line.split(" ", 1)[1].split(",")[0]
        for line in (folder / "LOC_synset_mapping.txt").read_text().splitlines()
    ]
    labels = {}
    for line in (folder / "val_labels.txt").read_text().splitlines():
        file, index = line.split()
        labels[file] = names[int(index)]
    return labels


def _inputs(root: Path, points: int, images: int, rng: np.random.Generator):
    paths = sorted((root / "ilsvrc_val_sample" / "val").glob("*.JPEG"))[:images]
    labels = _classes(root)
    chosen = rng.choice(len(paths) * 49, size=min(points, len(paths) * 49), replace=False)
    out = []
    sizes = {}
    for flat in sorted(chosen.tolist()):
        k, cell = divmod(flat, 49)
        u, v = divmod(cell, 7)
        if k not in sizes:
            with Image.open(paths[k]) as picture:
                sizes[k] = picture.size
        width, height = sizes[k]
        box = (v * width // 7, u * height // 7, (v + 1) * width // 7, (u + 1) * height // 7)
        out.append(MapPoint(k, (u, v), box, labels.get(paths[k].name)))
    return paths, out


def _browser_times(page: Path, repeats: int = 20) -> tuple[float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser_support import headless_chromium

    driver_gen = headless_chromium()
    driver = next(driver_gen)
    try:
        start = time.perf_counter()
        driver.get(page.as_uri())
        while driver.execute_script("return document.body.dataset.ready") != "true":
            time.sleep(0.01)
        ready = time.perf_counter() - start
        draw = driver.execute_script(
            "const t = performance.now(); for (let n = 0; n < arguments[0]; n++) "
            "window.patchMap.draw(); return (performance.now() - t) / arguments[0];",
            repeats,
        )
        return ready, draw / 1000
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("--points", type=int, default=3000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--umap", action="store_true", help="coords from umap_coords")
    parser.add_argument("--browser", action="store_true", help="time it in headless Chromium")
    parser.add_argument("--out", type=Path, default=None, help="keep the page here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    paths, points = _inputs(args.root, args.points, args.images, rng)
    n = len(points)
    if args.umap:
        started = time.perf_counter()
        coords = umap_coords(rng.normal(size=(n, 64)))
        print(f"umap_coords on {n}×64: {time.perf_counter() - started:.1f} s")
    else:
        centres = rng.normal(scale=5, size=(12, 2))
        coords = centres[rng.integers(0, 12, n)] + rng.normal(size=(n, 2))
    neighbours = rng.integers(0, n, size=(n, 10))
    out = args.out or Path(tempfile.mkdtemp()) / "map.html"
    started = time.perf_counter()
    write_map_page(out, coords, points, paths, neighbours, title="ILSVRC sample")
    seconds = time.perf_counter() - started
    used = len({p.image for p in points})
    size = out.stat().st_size
    print(
        f"{n} points from {used} images: page {size / 1e6:.2f} MB = "
        f"{size / n / 1e3:.2f} kB per point; written in {seconds:.1f} s ({out})"
    )
    if args.browser:
        ready, draw = _browser_times(out)
        print(
            f"headless Chromium: ready {ready:.2f} s after navigation; "
            f"one full redraw {1000 * draw:.1f} ms"
        )


if __name__ == "__main__":
    main()
