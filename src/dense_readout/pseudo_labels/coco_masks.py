"""COCO semantic masks from the instance annotations, for scoring pseudo-labels.

Label ``1 + c`` for the contiguous class ``c`` of each instance the A.1 filter kept
(:class:`~dense_readout.experiments.coco_annotations.CocoInstances`, the classes the
image is labelled with); ``0`` elsewhere. Pixels of two kept classes at once, and of
instances the filter dropped (below 1% of the crop; their class is not an image label),
are void (255): no image-level label could produce them.

Example:
    >>> CocoSemanticMasks("/no/such/root")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dense_readout.errors.DatasetError: /no/such/root/annotations/instances_val2017.json not found...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .seeds import IGNORE

__all__ = ["CocoSemanticMasks"]


class CocoSemanticMasks:
    """``for_path(image_path)`` → ``H×W`` int64 semantic mask in the stored image frame."""

    def __init__(self, root: str | Path, split: str = "val2017") -> None:
        from ..experiments.coco_annotations import CocoInstances

        self.dataset = CocoInstances(root, split)
        self.by_name = {image.file_name: image for image in self.dataset.images}

    def for_path(self, path: str) -> np.ndarray | None:
        """The mask of the image file ``path`` (None if the annotations do not hold it)."""
        image = self.by_name.get(Path(path).name)
        if image is None:
            return None
        coco = self.dataset.coco
        info = coco.loadImgs(image.image_id)[0]
        mask = np.zeros((info["height"], info["width"]), dtype=np.int64)
        claimed = np.zeros(mask.shape, dtype=np.int64)  # classes claiming a pixel (bit-free count)
        kept = {annotation_id: label for annotation_id, label, _ in image.kept}
        void = np.zeros(mask.shape, dtype=bool)
        seen: dict[int, np.ndarray] = {}
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image.image_id], iscrowd=None)):
            pixels = coco.annToMask(annotation).astype(bool)
            label = kept.get(int(annotation["id"]))
            if label is None:
                void |= pixels
                continue
            seen[label] = seen.get(label, np.zeros(mask.shape, dtype=bool)) | pixels
        for label, pixels in seen.items():
            claimed += pixels
            mask[pixels] = 1 + label
        mask[(claimed > 1) | void] = IGNORE
        return mask
