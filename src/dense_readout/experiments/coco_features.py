"""The frozen backbone's grids of every COCO image, computed once and cached on disk.

Per image, the backbone runs on the three protocol inputs (original; w/o BG and
w/o FG for the validation positive's mask) and the grids ``F`` are stored under
a fingerprint of every setting, so repeated probe runs never recompute the
backbone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .coco_annotations import CocoInstances, PathLike, validation_positive

if TYPE_CHECKING:
    from ..readout import DenseReadout

__all__ = ["FeatureCache"]


class FeatureCache:
    """Backbone grids of every image, computed once and stored in ``folder``.

    Per image: ``grid`` (C×h×w of the original input), ``grid_wo_bg`` and
    ``grid_wo_fg`` (inputs with the background / the evaluation class's pixels
    replaced by the protocol's fill), ``fg`` (h×w cells of the evaluation class,
    any-pixel occupancy), ``presence`` (K×h×w cells of every kept class), the
    label set and the evaluation class. The file name holds a fingerprint of the
    model name, preprocessing, fill, filter and positive seed.

    Args:
        folder: cache directory (created).
        model: the frozen backbone (any model :class:`~dense_readout.DenseReadout`
            supports; only ``result.features`` is used).
        model_name: identifies the weights in the fingerprint.
        protocol: a :class:`~dense_readout.evaluation.protocol.Protocol`.
        seed: seed of :func:`validation_positive`.
        pooled_only: store only the pooled embedding ``pooled`` (N×C) of the
            original input — what a training split needs (a 1280×7×7 grid per
            image would be 30 GB for train2017).

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
        >>> import timm, torch
        >>> from dense_readout import DenseReadout
        >>> from dense_readout.evaluation.protocol import Protocol
        >>> from dense_readout.experiments.coco import FeatureCache
        >>> _ = torch.manual_seed(0)
        >>> model = timm.create_model("test_resnet", num_classes=2).eval()
        >>> protocol = Protocol(Preprocess(resize=64, crop=64))
        >>> cache = FeatureCache(f"{root}/cache", model, "test_resnet", protocol)
        >>> data = cache.load(coco)
        >>> tuple(data["grid"].shape), tuple(data["presence"].shape), data["computed"]
        ((3, 96, 2, 2), (3, 2, 2, 2), True)
        >>> data["fg"][0].tolist()  # image 0's cat covers the top-left 32-px cell only
        [[True, False], [False, False]]
        >>> x = protocol.preprocess(Image.open(coco[0].path))[None]
        >>> with torch.no_grad():
        ...     features = DenseReadout(model)(x).features[0]
        >>> torch.allclose(data["grid"][0], features, atol=1e-5)  # the backbone's grid
        True
        >>> cache.load(coco)["computed"]  # the second call reads the file
        False
        >>> tmp.cleanup()
    """

    def __init__(
        self,
        folder: PathLike,
        model: nn.Module,
        model_name: str,
        protocol: Any,
        seed: int = 0,
        batch_size: int = 8,
        pooled_only: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.model, self.model_name, self.protocol = model, model_name, protocol
        self.seed, self.batch_size, self.pooled_only = seed, batch_size, pooled_only

    def fingerprint(self, dataset: CocoInstances) -> str:
        payload = {
            "model": self.model_name,
            "protocol": self.protocol.describe(),
            "seed": self.seed,
            "min_fraction": dataset.min_fraction,
            "crowd": dataset.include_crowd,
            "images": [image.image_id for image in dataset.images],
            "version": 2,  # 2: images decoded in the stored frame (no EXIF rotation)
            "pooled_only": self.pooled_only,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, dataset: CocoInstances) -> Path:
        return (
            self.folder / f"coco_{dataset.split}_{self.model_name}_{self.fingerprint(dataset)}.pt"
        )

    def load(self, dataset: CocoInstances, progress: bool = False) -> dict[str, Any]:
        """The cached features (computing and saving them on the first call).

        Returns a dict with stacked tensors ``grid``, ``grid_wo_bg``, ``grid_wo_fg``
        (N×C×h×w), ``fg`` (N×h×w), ``presence`` (N×K×h×w), ``labels`` (N×K bool),
        ``target`` (N), ``image_ids`` (N) and ``computed`` (False when read from disk).
        """
        path = self.path(dataset)
        if path.is_file():
            data = torch.load(path, map_location="cpu", weights_only=True)
            data["computed"] = False
            return data
        data = self._compute(dataset, progress)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(data, tmp)
        tmp.replace(path)
        data["computed"] = True
        return data

    def _compute(self, dataset: CocoInstances, progress: bool) -> dict[str, Any]:
        from .. import load_image
        from ..readout import DenseReadout

        readout = DenseReadout(self.model)
        keys = (
            ("pooled",)
            if self.pooled_only
            else ("grid", "grid_wo_bg", "grid_wo_fg", "fg", "presence")
        )
        out: dict[str, list[Tensor]] = {k: [] for k in keys}
        labels: list[Tensor] = []
        targets: list[int] = []
        ids: list[int] = []
        inputs: list[Tensor] = []  # the pending batch
        masks: list[Tensor] = []  # its K×224×224 class masks (none when pooled_only)
        indices: Iterable[int] = range(len(dataset))
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc="backbone features")
        for index in indices:
            image = dataset[index]
            targets.append(validation_positive(image.image_id, image.labels, self.seed))
            if not self.pooled_only:
                masks.append(dataset.label_masks(image))
            # COCO masks are drawn on the stored pixels: never apply an EXIF rotation here
            inputs.append(self.protocol.preprocess(load_image(image.path, exif_transpose=False)))
            labels.append(dataset.label_vector(image))
            ids.append(image.image_id)
            if len(inputs) == self.batch_size:
                self._add_batch(readout, inputs, masks, targets[-len(inputs) :], out)
                inputs, masks = [], []
        if inputs:
            self._add_batch(readout, inputs, masks, targets[-len(inputs) :], out)
        data: dict[str, Any] = {k: torch.stack(v) for k, v in out.items()}
        data.update(
            labels=torch.stack(labels),
            target=torch.tensor(targets),
            image_ids=torch.tensor(ids),
            model=self.model_name,
            protocol=json.dumps(self.protocol.describe()),
        )
        return data

    def _add_batch(
        self,
        readout: DenseReadout,
        inputs: list[Tensor],
        masks: list[Tensor],
        targets: list[int],
        out: dict[str, list[Tensor]],
    ) -> None:
        """Append the backbone outputs of one batch of preprocessed images to ``out``."""
        from ..evaluation.protocol import grid_occupancy

        x = torch.stack(inputs)
        if self.pooled_only:  # training split: only the GAP embedding is needed
            out["pooled"].extend(readout(x).features.float().mean(dim=(2, 3)))
            return
        mask = torch.stack([m[t] for m, t in zip(masks, targets, strict=True)])
        grids = readout(self.protocol.three_inputs(x, mask)).features.float()
        count = len(inputs)
        grid_size = (int(grids.shape[-2]), int(grids.shape[-1]))
        out["grid"].extend(grids[:count])
        out["grid_wo_bg"].extend(grids[count : 2 * count])
        out["grid_wo_fg"].extend(grids[2 * count :])
        out["fg"].extend(grid_occupancy(mask, grid_size))
        out["presence"].extend(grid_occupancy(m, grid_size) for m in masks)
