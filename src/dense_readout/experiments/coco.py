"""MS-COCO frozen-backbone linear probe read out per cell (paper 4.3, A.1, Table 3).

Pipeline, one job per function:

1. :class:`CocoInstances` reads an official ``instances_*.json`` with pycocotools
   (polygons, uncompressed and compressed RLE all decode through ``annToMask``,
   the reference implementation) and applies the A.1 filter: an instance is kept
   if its mask, resized (shorter side 256, nearest) and centre-cropped to 224,
   covers at least 1% of the crop. Images without a kept instance are dropped;
   the kept categories form the multi-label target.
2. :func:`sample_positive` draws the single training positive uniformly from an
   image's labels (anew each epoch); :func:`validation_positive` fixes one per
   image (a seeded uniform draw keyed on the image id).
3. :class:`FeatureCache` runs the frozen backbone once per image on the three
   protocol inputs (original; w/o BG and w/o FG for the validation positive's
   mask) and stores the grids ``F`` on disk, keyed by a fingerprint of every
   setting, so repeated probe runs never recompute the backbone.
4. :class:`LinearProbe` is the paper's head: L2 normalisation, dropout 0.3,
   Linear; trained with cross-entropy on pooled (GAP) embeddings.
5. :func:`evaluate_probe` applies the head to every cell through the core's
   :class:`~dense_readout.adapters.custom.CustomAdapter` and feeds the
   benchmark suite's metrics (:mod:`dense_readout.evaluation.metrics`) with the
   evaluation class's mask as foreground; :func:`cross_validate` does k-fold
   train/evaluate on a small sample.

The head's L2 normalisation is nonlinear, so ``mean_uv Z`` is *not* the image
logit (``exact = False``): the readout applies the trained head pointwise, as
the paper does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..errors import DatasetError, InputError

__all__ = [
    "TABLE3_METRICS",
    "CocoImage",
    "CocoInstances",
    "FeatureCache",
    "LinearProbe",
    "ProbeConfig",
    "cross_validate",
    "evaluate_probe",
    "probe_split",
    "sample_positive",
    "train_probe",
    "validation_positive",
]

PathLike = str | Path
TABLE3_METRICS: tuple[str, ...] = (
    "top1",
    "top5",
    "fg_det",
    "loc",
    "loc_cell_pooled",
    "loc_wo_bg",
    "bg_act",
    "bg_act_wo_fg",
)


# -- 1. annotations and the A.1 filter -----------------------------------------------------


@dataclass
class CocoImage:
    """One image after filtering: kept instances and multi-label target.

    Attributes:
        image_id, file_name, path: as in the annotation file.
        labels: sorted contiguous class indices (0..79) of the kept instances.
        kept: ``(annotation id, class index, crop pixels)`` per kept instance.
        dropped: number of instances below the area threshold.
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

    Example:
        >>> from dense_readout.experiments.coco import CocoInstances   # doctest: +SKIP
        >>> coco = CocoInstances("../shared/data/coco_val2017_sample")  # doctest: +SKIP
        >>> len(coco), coco.num_classes                                # doctest: +SKIP
        (78, 80)
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
    """One positive drawn uniformly from ``labels`` (the training target of one step)."""
    if not labels:
        raise InputError("an image needs at least one label to sample a positive.")
    return int(labels[int(torch.randint(len(labels), (1,), generator=generator))])


def validation_positive(image_id: int, labels: Sequence[int], seed: int = 0) -> int:
    """The fixed, deterministic evaluation class of an image: a uniform draw from its
    sorted labels keyed on ``(seed, image_id)`` (the same on every run and machine).

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


# -- 3. the feature cache -------------------------------------------------------------------------


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
            "version": 1,
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
        from ..evaluation.protocol import grid_occupancy
        from ..readout import DenseReadout

        readout = DenseReadout(self.model)
        preprocess = self.protocol.preprocess
        keys = (
            ("pooled",)
            if self.pooled_only
            else ("grid", "grid_wo_bg", "grid_wo_fg", "fg", "presence")
        )
        out: dict[str, list[Tensor]] = {k: [] for k in keys}
        labels, targets, ids = [], [], []
        indices: Iterable[int] = range(len(dataset))
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc="backbone features")
        pending: list[tuple[Tensor, Tensor, Tensor]] = []

        def flush() -> None:
            if not pending:
                return
            x = torch.stack([p[0] for p in pending])
            if self.pooled_only:  # training split: only the GAP embedding is needed
                out["pooled"].extend(readout(x).features.float().mean(dim=(2, 3)))
                pending.clear()
                return
            mask = torch.stack([p[1] for p in pending])
            grids = readout(self.protocol.three_inputs(x, mask)).features.float()
            count = len(pending)
            grid_size = tuple(grids.shape[-2:])
            out["grid"].extend(grids[:count])
            out["grid_wo_bg"].extend(grids[count : 2 * count])
            out["grid_wo_fg"].extend(grids[2 * count :])
            out["fg"].extend(grid_occupancy(mask, grid_size))
            out["presence"].extend(grid_occupancy(p[2], grid_size) for p in pending)
            pending.clear()

        for index in indices:
            image = dataset[index]
            target = validation_positive(image.image_id, image.labels, self.seed)
            masks = None if self.pooled_only else dataset.label_masks(image)
            pending.append(
                (
                    preprocess(load_image(image.path)),
                    None if masks is None else masks[target],
                    masks,
                )
            )
            labels.append(dataset.label_vector(image))
            targets.append(target)
            ids.append(image.image_id)
            if len(pending) == self.batch_size:
                flush()
        flush()
        data: dict[str, Any] = {k: torch.stack(v) for k, v in out.items()}
        data.update(
            labels=torch.stack(labels),
            target=torch.tensor(targets),
            image_ids=torch.tensor(ids),
            model=self.model_name,
            protocol=json.dumps(self.protocol.describe()),
        )
        return data


# -- 4. the linear probe ----------------------------------------------------------------------------


class LinearProbe(nn.Module):
    """The paper's COCO head: ``Linear(Dropout_p(h / ||h||₂))``.

    Example:
        >>> import torch
        >>> from dense_readout.experiments.coco import LinearProbe
        >>> probe = LinearProbe(16, 4).eval()
        >>> torch.allclose(probe(torch.ones(1, 16)), probe(3 * torch.ones(1, 16)))  # scale-free
        True
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(F.normalize(features, dim=-1)))


@dataclass(frozen=True)
class ProbeConfig:
    """Optimisation of the probe (full batch: the sample has tens of images).

    The paper gives the head (L2 norm, dropout 0.3, CE on one sampled positive)
    but not the optimiser; these are our choices.
    """

    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    dropout: float = 0.3
    batch_size: int = 256
    seed: int = 0


def train_probe(
    pooled: Tensor, labels: Tensor, num_classes: int, config: ProbeConfig = ProbeConfig()
) -> LinearProbe:
    """Train :class:`LinearProbe` on pooled embeddings ``N×C`` with multi-labels ``N×K``:
    each epoch every image gets one positive drawn uniformly from its labels."""
    if pooled.dim() != 2 or labels.shape != (pooled.shape[0], num_classes):
        raise InputError(
            f"pooled must be N×C and labels N×K; got {tuple(pooled.shape)} and {tuple(labels.shape)}."
        )
    if not bool(labels.any(dim=1).all()):
        raise InputError("every training image needs at least one label.")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    probe = LinearProbe(pooled.shape[1], num_classes, config.dropout)
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    weights = labels.float()
    probe.train()
    for _ in range(config.epochs):
        order = torch.randperm(pooled.shape[0], generator=generator)
        targets = torch.multinomial(weights, 1, generator=generator).squeeze(
            1
        )  # one positive per image
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = F.cross_entropy(probe(pooled[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return probe.eval()


# -- 5. per-cell evaluation --------------------------------------------------------------------------


def evaluate_probe(
    probe: LinearProbe,
    data: dict[str, Any],
    index: Tensor | None = None,
    suite: Any | None = None,
    any_class: Any | None = None,
) -> tuple[Any, Any]:
    """Apply ``probe`` to every cell of the cached grids and update the metrics.

    ``suite`` is a :class:`~dense_readout.evaluation.metrics.MetricSuite` over
    :data:`TABLE3_METRICS` (created if None); ``any_class`` a
    :class:`~dense_readout.experiments.synthetic_train.SyntheticMetrics` giving the
    multi-label Loc. (a FG cell of *any* kept class counts as correct if its top-1 is
    a class present in it). Returns ``(suite, any_class)``.
    """
    from ..adapters.custom import CustomAdapter
    from ..evaluation.metrics import GridBatch, MetricSuite
    from .synthetic_train import SyntheticMetrics

    num_classes = probe.fc.out_features
    suite = suite or MetricSuite(TABLE3_METRICS, num_classes)
    any_class = any_class or SyntheticMetrics()
    index = torch.arange(len(data["target"])) if index is None else index
    adapter = CustomAdapter(probe, features=nn.Identity(), head=probe)
    probe.eval()
    with torch.no_grad():
        grid = data["grid"][index]
        scores = adapter.readout(grid)
        logits = adapter.image_logits(grid)  # the head on the GAP embedding, as trained
        batch = GridBatch(
            target=data["target"][index],
            logits=logits,
            scores=scores,
            fg=data["fg"][index],
            scores_wo_bg=adapter.readout(data["grid_wo_bg"][index]),
            scores_wo_fg=adapter.readout(data["grid_wo_fg"][index]),
        )
        suite.update(batch)
        any_class.update(logits, scores.argmax(1), data["target"][index], data["presence"][index])
    return suite, any_class


def cross_validate(
    data: dict[str, Any], num_classes: int, folds: int = 5, config: ProbeConfig = ProbeConfig()
) -> dict[str, Any]:
    """k-fold probe: image ``i`` (in image-id order) is in fold ``i mod folds``; each fold
    is evaluated by a probe trained on the other folds, so every image is evaluated
    exactly once by a head that never saw it. Metrics are pooled over all folds.
    """
    from ..evaluation.metrics import MetricSuite
    from .synthetic_train import SyntheticMetrics

    count = len(data["target"])
    if not 2 <= folds <= count:
        raise InputError(f"folds must be in [2, {count}] for {count} images, got {folds}.")
    order = torch.argsort(data["image_ids"])
    fold_of = torch.empty(count, dtype=torch.long)
    fold_of[order] = torch.arange(count) % folds
    pooled = data["grid"].mean(dim=(2, 3))
    suite, any_class = MetricSuite(TABLE3_METRICS, num_classes), SyntheticMetrics()
    per_fold = []
    for fold in range(folds):
        test = torch.nonzero(fold_of == fold).squeeze(1)
        train = torch.nonzero(fold_of != fold).squeeze(1)
        probe = train_probe(pooled[train], data["labels"][train], num_classes, config)
        fold_suite, _ = evaluate_probe(probe, data, test)
        evaluate_probe(probe, data, test, suite, any_class)
        seen = data["labels"][train].any(dim=0)
        unseen = int((~seen[data["target"][test]]).sum())  # evaluation class absent from training
        per_fold.append(
            {
                "fold": fold,
                "train_images": len(train),
                "test_images": len(test),
                "test_images_with_unseen_class": unseen,
                **{k: v for k, v in fold_suite.values().items() if k in ("top1", "loc")},
            }
        )
    values = suite.values()
    extra = any_class.summary()
    return {
        "metrics": values,
        "counts": suite.counts(),
        "loc_any_present_class": extra["loc"],
        "loc_any_present_class_per_image": extra["loc_per_image"],
        "top1_any_label": extra["top1_visible"],
        "test_images_with_unseen_class": sum(f["test_images_with_unseen_class"] for f in per_fold),
        "folds": per_fold,
        "probe": asdict(config),
    }


def probe_split(
    train: dict[str, Any],
    val: dict[str, Any],
    num_classes: int,
    config: ProbeConfig = ProbeConfig(),
) -> dict[str, Any]:
    """The paper's setting: train on one split's pooled features (``train`` from a
    ``pooled_only`` cache, or a full one), evaluate per cell on another (``val``)."""
    from ..evaluation.metrics import MetricSuite
    from .synthetic_train import SyntheticMetrics

    pooled = train["pooled"] if "pooled" in train else train["grid"].mean(dim=(2, 3))
    probe = train_probe(pooled, train["labels"], num_classes, config)
    suite, any_class = evaluate_probe(
        probe, val, None, MetricSuite(TABLE3_METRICS, num_classes), SyntheticMetrics()
    )
    extra = any_class.summary()
    seen = train["labels"].any(dim=0)
    return {
        "metrics": suite.values(),
        "counts": suite.counts(),
        "loc_any_present_class": extra["loc"],
        "loc_any_present_class_per_image": extra["loc_per_image"],
        "top1_any_label": extra["top1_visible"],
        "test_images_with_unseen_class": int((~seen[val["target"]]).sum()),
        "train_images": len(train["labels"]),
        "probe": asdict(config),
    }
