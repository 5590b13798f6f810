"""COCO annotations with the paper's A.1 filter, and an image's single positives.

:class:`CocoInstances` reads an official ``instances_*.json`` with pycocotools
(polygons, uncompressed and compressed RLE all decode through ``annToMask``, the
reference implementation) and keeps an instance if its mask, resized (shorter
side 256, nearest) and centre-cropped to 224, covers at least 1% of the crop.
Images without a kept instance are dropped; the kept categories form the
multi-label target. :func:`sample_positive` draws the single training positive
uniformly from an image's labels (anew each epoch); :func:`validation_positive`
fixes one per image (a seeded uniform draw keyed on the image id).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import DatasetError, InputError

__all__ = ["CocoImage", "CocoInstances", "PathLike", "sample_positive", "validation_positive"]

PathLike = str | Path


@dataclass
class CocoImage:
    """One image after filtering: kept instances and multi-label target.

    Attributes:
        image_id, file_name, path: as in the annotation file.
        labels: sorted contiguous class indices (0..79) of the kept instances.
        kept: ``(annotation id, class index, crop pixels)`` per kept instance.
        dropped: number of instances below the area threshold.

    Example:
        >>> import json, os, tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from dense_readout.experiments.coco import CocoInstances
        >>> from dense_readout.preprocessing import Preprocess
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name  # a 3-image COCO layout
        >>> os.makedirs(f"{root}/annotations"); os.makedirs(f"{root}/val2017")
        >>> def square(id, image, category, x, y, side):  # a polygon instance
        ...     return {"id": id, "image_id": image, "category_id": category, "iscrowd": 0,
        ...             "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]],
        ...             "area": side * side, "bbox": [x, y, side, side]}
        >>> for i in range(3):
        ...     Image.new("RGB", (64, 64), "white").save(f"{root}/val2017/{i}.png")
        >>> annotations = [square(10, 1, 1, 4, 8, 24), square(11, 2, 3, 36, 8, 24),
        ...     square(12, 3, 1, 36, 8, 24), square(13, 3, 3, 4, 36, 24),
        ...     square(14, 2, 1, 0, 60, 2)]  # the last covers < 1% of the crop: dropped
        >>> _ = Path(f"{root}/annotations/instances_val2017.json").write_text(json.dumps({
        ...     "images": [{"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64}
        ...                for i in range(3)], "annotations": annotations,
        ...     "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]}))
        >>> coco = CocoInstances(root, preprocess=Preprocess(resize=64, crop=64))
        >>> image = coco[1]  # a CocoImage
        >>> image.image_id, image.file_name, image.labels, image.dropped
        (2, '1.png', (1,), 1)
        >>> image.kept  # (annotation id, class index: category 3 is the second class, pixels)
        [(11, 1, 576)]
        >>> coco[2].labels, coco.class_names  # two kept classes: a multi-label image
        ((0, 1), ('cat', 'dog'))
        >>> tmp.cleanup()
    """

    image_id: int
    file_name: str
    path: Path
    labels: tuple[int, ...]
    kept: list[tuple[int, int, int]] = field(default_factory=list)
    dropped: int = 0


class CocoInstances:
    """An official COCO ``instances_*.json`` with the paper's A.1 filtering.

    Args:
        root: folder holding ``annotations/instances_<split>.json`` and ``<split>/``.
        split: e.g. ``'val2017'``.
        preprocess: the geometry (default: the paper's 256 → 224 crop).
        min_fraction: keep an instance whose cropped mask covers at least this
            fraction of the crop (A.1: 0.01).
        include_crowd: keep ``iscrowd=1`` regions (RLE) as instances of their class.

    The 79-image sample in ``../shared/data/coco_val2017_sample`` loads the same way as the
    one-image layout of the example (:class:`CocoImage`'s example has a larger one).

    Example:
        >>> import json, os, tempfile
        >>> from PIL import Image
        >>> from dense_readout.experiments.coco import CocoInstances
        >>> from dense_readout.preprocessing import Preprocess
        >>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
        >>> os.makedirs(f"{root}/annotations"); os.makedirs(f"{root}/val2017")
        >>> Image.new("RGB", (64, 64)).save(f"{root}/val2017/a.png")
        >>> square = [[8, 8, 40, 8, 40, 40, 8, 40]]  # a 32×32 polygon of category 5
        >>> with open(f"{root}/annotations/instances_val2017.json", "w") as f:
        ...     json.dump({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        ...                "annotations": [{"id": 7, "image_id": 1, "category_id": 5, "iscrowd": 0,
        ...                                 "segmentation": square, "area": 1024, "bbox": [8, 8, 32, 32]}],
        ...                "categories": [{"id": 5, "name": "airplane"}]}, f)
        >>> coco = CocoInstances(root, preprocess=Preprocess(resize=64, crop=64))
        >>> len(coco), coco.num_classes, coco.class_names, coco[0].labels
        (1, 1, ('airplane',), (0,))
        >>> tmp.cleanup()
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "val2017",
        preprocess: Any | None = None,
        min_fraction: float = 0.01,
        include_crowd: bool = True,
    ) -> None:
        from ..preprocessing import Preprocess

        self.root = Path(root)
        self.split = split
        self.preprocess = preprocess or Preprocess(resize=256, crop=224)
        if not 0.0 <= min_fraction < 1.0:
            raise InputError(f"min_fraction must be in [0, 1), got {min_fraction}.")
        self.min_fraction = float(min_fraction)
        self.include_crowd = include_crowd
        annotation = self.root / "annotations" / f"instances_{split}.json"
        if not annotation.is_file():
            raise DatasetError(
                f"{annotation} not found. Expected the official COCO layout: "
                f"<root>/annotations/instances_{split}.json and <root>/{split}/*.jpg."
            )
        self.coco = _load_coco(annotation)
        category_ids = sorted(self.coco.getCatIds())
        if not category_ids:
            raise DatasetError(f"{annotation} defines no categories.")
        self.category_to_label = {cid: i for i, cid in enumerate(category_ids)}
        self.class_names = tuple(self.coco.loadCats(cid)[0]["name"] for cid in category_ids)
        self.images: list[CocoImage] = []
        self.skipped: dict[str, int] = {"no_kept_instance": 0, "missing_file": 0}
        self.instances_dropped = 0  # over all images, including the skipped ones
        for image_id in sorted(self.coco.getImgIds()):
            self._add(image_id)
        if not self.images:
            raise DatasetError(
                f"No image of {annotation} has a kept instance (min_fraction={min_fraction})."
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> CocoImage:
        return self.images[index]

    def _crop_mask(self, mask: np.ndarray) -> np.ndarray:
        cropped = self.preprocess.geometry_of(
            Image.fromarray(mask.astype(np.uint8) * 255), "nearest"
        )
        return np.asarray(cropped) > 127

    def _annotations(self, image_id: int) -> list[dict]:
        ids = self.coco.getAnnIds(imgIds=[image_id], iscrowd=None if self.include_crowd else False)
        return self.coco.loadAnns(ids)

    def _add(self, image_id: int) -> None:
        info = self.coco.loadImgs(image_id)[0]
        path = self.root / self.split / info["file_name"]
        if not path.is_file():
            self.skipped["missing_file"] += 1
            return
        crop_pixels = self.preprocess.crop**2
        kept, dropped = [], 0
        for annotation in self._annotations(image_id):
            pixels = int(self._crop_mask(self.coco.annToMask(annotation)).sum())
            if pixels >= self.min_fraction * crop_pixels and pixels > 0:
                kept.append(
                    (
                        int(annotation["id"]),
                        self.category_to_label[annotation["category_id"]],
                        pixels,
                    )
                )
            else:
                dropped += 1
        self.instances_dropped += dropped
        if not kept:
            self.skipped["no_kept_instance"] += 1
            return
        labels = tuple(sorted({label for _, label, _ in kept}))
        self.images.append(CocoImage(int(image_id), info["file_name"], path, labels, kept, dropped))

    def label_masks(self, image: CocoImage) -> Tensor:
        """Kept-instance masks per class on the 224 crop: ``K×224×224`` bool."""
        size = self.preprocess.crop
        masks = torch.zeros(self.num_classes, size, size, dtype=torch.bool)
        for annotation_id, label, _ in image.kept:
            annotation = self.coco.loadAnns([annotation_id])[0]
            masks[label] |= torch.from_numpy(self._crop_mask(self.coco.annToMask(annotation)))
        return masks

    def label_vector(self, image: CocoImage) -> Tensor:
        """Multi-label target: ``K`` bool."""
        vector = torch.zeros(self.num_classes, dtype=torch.bool)
        vector[list(image.labels)] = True
        return vector

    def statistics(self) -> dict[str, Any]:
        """Counts after filtering (compare with A.1: 59.6% of val images multi-label)."""
        per_image = [len(image.labels) for image in self.images]
        return {
            "images_kept": len(self.images),
            "images_skipped": dict(self.skipped),
            "instances_kept": sum(len(image.kept) for image in self.images),
            "instances_dropped": self.instances_dropped,
            "multi_label_images": sum(n > 1 for n in per_image),
            "classes_per_image": {str(n): per_image.count(n) for n in sorted(set(per_image))},
            "classes_present": len({label for image in self.images for label in image.labels}),
        }


def _load_coco(path: Path):
    try:
        from pycocotools.coco import COCO
    except ImportError:  # pragma: no cover - pycocotools is a dependency of this experiment
        raise DatasetError("pycocotools is required for COCO: pip install pycocotools") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            return COCO(str(path))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{path} is not a COCO instances file: {error}") from None


# -- 2. single positives ------------------------------------------------------------------------


def sample_positive(labels: Sequence[int], generator: torch.Generator) -> int:
    """One positive drawn uniformly from ``labels`` (the training target of one step).

    Example:
        >>> import collections, torch
        >>> from dense_readout.experiments.coco import sample_positive
        >>> generator = torch.Generator().manual_seed(0)
        >>> draws = collections.Counter(sample_positive([3, 17, 42], generator) for _ in range(3000))
        >>> sorted(draws), all(900 < n < 1100 for n in draws.values())  # each about 1/3
        ([3, 17, 42], True)
        >>> sample_positive([5], generator)  # a single label is always the positive
        5
    """
    if not labels:
        raise InputError("an image needs at least one label to sample a positive.")
    return int(labels[int(torch.randint(len(labels), (1,), generator=generator))])


def validation_positive(image_id: int, labels: Sequence[int], seed: int = 0) -> int:
    """The fixed, deterministic evaluation class of an image.

    A uniform draw from its sorted labels keyed on ``(seed, image_id)`` (the same on every
    run and machine).

    Example:
        >>> from dense_readout.experiments.coco import validation_positive
        >>> validation_positive(139, [0, 56, 62]) == validation_positive(139, [62, 0, 56])
        True
    """
    if not labels:
        raise InputError(f"image {image_id} has no label to evaluate.")
    ordered = sorted(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(image_id)]))
    return int(ordered[int(rng.integers(len(ordered)))])
