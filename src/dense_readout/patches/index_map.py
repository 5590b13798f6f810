"""The patch index as an interactive UMAP page (paper Fig. 10): a sample of its vectors.

:func:`write_index_map` draws ``sample`` vectors (seeded), projects them with UMAP
(:func:`dense_readout.page.patch_map.umap_coords`), finds each point's nearest
neighbours among the sampled points with FAISS (exact inner product = cosine), and
writes the offline page (:func:`dense_readout.page.patch_map.write_map_page`).
Points are coloured by the image's class (its folder under the indexed root, when
the images lie in more than one folder) or by the readout's top-1 class of the cell
when the model has a head.

Example:
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> index = SimpleNamespace(ids=lambda: np.arange(100), root="ix")
    >>> sample_ids(index, 5, seed=0).shape, sample_ids(index, 500).shape
    ((5,), (100,))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .index_merge import faiss
from .index_query import PatchIndex

__all__ = ["image_groups", "sample_ids", "write_index_map"]


def sample_ids(index: PatchIndex, sample: int, seed: int = 0) -> np.ndarray:
    """``sample`` vector ids of ``index`` drawn without replacement (all if fewer), sorted."""
    if sample < 2:
        raise InputError(f"--sample must be at least 2, got {sample}.")
    ids = index.ids()
    if len(ids) == 0:
        raise InputError(f"{index.root}: the index is empty; build it from readable images.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=min(sample, len(ids)), replace=False))


def image_groups(paths: list[str]) -> list[str | None]:
    """Each image's folder name, or all ``None`` when the images share one folder.

    Example:
        >>> image_groups(["r/cat/1.jpg", "r/dog/2.jpg"]), image_groups(["r/1.jpg", "r/2.jpg"])
        (['cat', 'dog'], [None, None])
    """
    folders = [Path(p).parent for p in paths]
    if len(set(folders)) < 2:
        return [None] * len(paths)
    return [folder.name for folder in folders]


def write_index_map(
    index: PatchIndex,
    out: str | Path,
    *,
    sample: int = 2000,
    neighbours: int = 8,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Write the map page of ``sample`` vectors of ``index`` to ``out``; returns its path.

    Example:
        >>> import tempfile, timm
        >>> from PIL import Image
        >>> from dense_readout.preprocessing import Preprocess
        >>> from dense_readout.errors import InputError
        >>> from dense_readout.patches import GridExtractor, PatchIndex, build_index, write_index_map
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> for k in range(2):
        ...     Image.effect_noise((64, 64), 30 + 30 * k).convert("RGB").save(f"{root}/{k}.png")
        >>> extract = GridExtractor(timm.create_model("test_resnet").eval())
        >>> _ = build_index([f"{root}/{k}.png" for k in range(2)], f"{root}/ix", extract,
        ...                 Preprocess(resize=96, crop=96), model_name="test_resnet", progress=False)
        >>> index = PatchIndex.open(f"{root}/ix")
        >>> # write_index_map(index, f"{root}/map.html") writes the page; its UMAP compiles
        >>> # numba code on first use (tens of seconds), so here only the size check runs:
        >>> try:
        ...     write_index_map(index, f"{root}/map.html", sample=3)
        ... except InputError as error:
        ...     print(str(error).split(";")[0])
        A patch map needs at least 4 vectors
        >>> tmp.cleanup()
    """
    from ..page.patch_map import MapPoint, umap_coords, write_map_page

    ids = sample_ids(index, sample, seed)
    if len(ids) < 4:  # UMAP needs n_neighbors >= 2 and n_neighbors + 2 points
        raise InputError(
            f"A patch map needs at least 4 vectors; {len(ids)} were sampled. Pass a larger "
            "--sample or build the index over more images."
        )
    vectors = index.vectors(ids)
    coords = umap_coords(vectors, seed=seed, n_neighbors=min(15, len(ids) - 2))
    exact = faiss().IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, nearest = exact.search(vectors, min(neighbours + 1, len(ids)))
    hits = [index.hit(vector_id) for vector_id in ids.tolist()]
    used = sorted({hit.image for hit in hits})  # the page embeds only the images it shows
    position = {image: n for n, image in enumerate(used)}
    paths = [index.images[image]["path"] for image in used]
    groups = image_groups([entry["path"] for entry in index.images])
    points = [
        MapPoint(position[hit.image], hit.cell, hit.box, groups[hit.image], hit.top1)
        for hit in hits
    ]
    colour_by = "top1" if index.manifest.get("head") and all(g is None for g in groups) else "group"
    name = title or (
        f"Patch map: {len(ids)} of {index.size} cells, {index.manifest['model']} "
        f"({index.grid[0]}x{index.grid[1]} grid)"
    )
    return write_map_page(
        Path(out), coords, points, paths, nearest, title=name, colour_by=colour_by
    )
