"""Where a ``--model`` name comes from: one registry of model sources, keyed by prefix.

``--model resnet50`` is a timm image classifier, ``hf:DIR`` a saved Hugging Face
one (both loaded by :func:`~dense_readout.commands._model_options.load_model`);
``torchvision:r3d_18`` is a torchvision video classifier and ``monai:densenet121`` a
MONAI 3-D network, which read clips and volumes (``1×C×T×H×W``). :data:`MODEL_SOURCES`
(a :class:`~dense_readout.registry.Registry`, like every other pluggable name) holds
one :class:`ModelSource` per prefix with what it reads, the names it knows and its
default clip size; :func:`register_model_source` adds one. :func:`model_source` picks
the source of a name and checks the name, without importing torch (``--help`` and
argument errors stay fast), and :func:`build_volume_model` builds a clip/volume model
with its checkpoint.

No weights are downloaded: video and volume models need ``--checkpoint`` or
``--random-weights``.

Example:
    >>> from dense_readout.commands._model_sources import model_source
    >>> source, name = model_source("torchvision:r3d_18")
    >>> source.spatial_dims, name, source.defaults[name]
    (3, 'r3d_18', (16, 112))
    >>> model_source("resnet50")[0].name, model_source("hf:my-model")[0].spatial_dims
    ('timm', 2)
    >>> model_source("torchvision:resnet18")
    Traceback (most recent call last):
    ...
    dense_readout.errors.CheckpointError: unknown torchvision video classifier 'resnet18'; known: mc3_18, mvit_v1_b, mvit_v2_s, r2plus1d_18, r3d_18, s3d, swin3d_b, swin3d_s, swin3d_t.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, InputError
from ..registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MODEL_SOURCES",
    "ModelSource",
    "VolumeModel",
    "build_volume_model",
    "model_source",
    "register_model_source",
    "require_weights",
]

# torchvision.transforms._presets.VideoClassification: every torchvision video weight
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


# the source of a --model name without a prefix
DEFAULT_SOURCE = "timm"


@dataclass(frozen=True)
class ModelSource:
    """One kind of ``--model`` name: ``NAME:model`` (``name`` is the prefix without its colon).

    The source named ``"timm"`` takes names without a prefix. ``defaults`` maps each known name to its default ``(frames, size)``: the clip
    length and the square frame side it is built for (empty: any name, checked by
    the loader). ``channels`` is what the model reads (None: the input's own),
    ``mean``/``std`` its normalisation (None: each volume to zero mean, unit std),
    ``num_classes`` the head size built without a checkpoint, ``slice_axis`` what the
    page calls one step of the clip ("frame") or volume ("slice").
    """

    name: str
    spatial_dims: int
    description: str
    defaults: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    num_classes: int = 0
    build: Callable[[str, int, int], nn.Module] | None = None
    slice_axis: str = "frame"

    @property
    def prefix(self) -> str:
        """What ``--model`` starts with: ``"NAME:"`` (``""`` for the timm source)."""
        return "" if self.name == DEFAULT_SOURCE else f"{self.name}:"


@dataclass(frozen=True)
class VolumeModel:
    """A clip/volume model built by :func:`build_volume_model` and what it was built for.

    ``weights`` is ``"checkpoint"`` or ``"random"``.
    """

    model: nn.Module
    source: ModelSource
    name: str
    weights: str
    channels: int
    num_classes: int


def _torchvision_video(name: str, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import video

    if in_channels != 3:
        raise InputError(f"torchvision video models read 3 channels (RGB), not {in_channels}.")
    return getattr(video, name)(weights=None, num_classes=num_classes)


def _monai(name: str, in_channels: int, num_classes: int) -> nn.Module:
    from .._optional import require

    nets = require("monai.networks.nets", extra="monai", purpose="MONAI models")
    if name.startswith("densenet"):
        return nets.DenseNet(  # DenseNet121 etc. are these block configurations
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=num_classes,
            block_config=_DENSENET_BLOCKS[name],
        )
    if name.startswith("efficientnet"):
        return nets.EfficientNetBN(
            name, pretrained=False, spatial_dims=3, in_channels=in_channels, num_classes=num_classes
        )
    return getattr(nets, name)(
        pretrained=False, spatial_dims=3, n_input_channels=in_channels, num_classes=num_classes
    )


_DENSENET_BLOCKS = {
    "densenet121": (6, 12, 24, 16),
    "densenet169": (6, 12, 32, 32),
    "densenet201": (6, 12, 48, 32),
    "densenet264": (6, 12, 64, 48),
}
_MONAI_NAMES = (
    *_DENSENET_BLOCKS,
    *(f"resnet{depth}" for depth in (10, 18, 34, 50, 101, 152, 200)),
    *(f"efficientnet-b{n}" for n in range(8)),
)

MODEL_SOURCES: Registry[ModelSource] = Registry(
    "model source",
    hint="Add a ModelSource (its name is the --model prefix) with "
    "dense_readout.commands._model_sources.register_model_source(source).",
)
"""Every ``--model`` prefix, by name (``"timm"``: names without a prefix)."""


def register_model_source(source: ModelSource) -> ModelSource:
    """Make ``--model NAME:...`` (``NAME`` = ``source.name``) build models from ``source``.

    Example:
        >>> from torch import nn
        >>> toy = ModelSource("toy", 3, "toy 3-D classifier", defaults={"tiny": (4, 8)},
        ...                   build=lambda name, channels, classes: nn.Conv3d(channels, classes, 1))
        >>> register_model_source(toy) is toy, model_source("toy:tiny")[0] is toy
        (True, True)
        >>> MODEL_SOURCES.unregister("toy") is toy
        True
    """
    return MODEL_SOURCES.add(source)


for _source in (
    ModelSource(DEFAULT_SOURCE, 2, "timm image classifier"),
    ModelSource("hf", 2, "saved Hugging Face image classifier"),
    ModelSource(
        "torchvision",
        3,
        "torchvision video classifier",
        # torchvision.models.list_models(module=torchvision.models.video); the
        # sizes are those of their Kinetics-400 weights (112 px for the ResNets)
        defaults={
            **dict.fromkeys(("mc3_18", "r2plus1d_18", "r3d_18"), (16, 112)),
            **dict.fromkeys(
                ("mvit_v1_b", "mvit_v2_s", "s3d", "swin3d_b", "swin3d_s", "swin3d_t"), (16, 224)
            ),
        },
        channels=3,
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        num_classes=400,
        build=_torchvision_video,
    ),
    ModelSource(
        "monai",
        3,
        "MONAI 3-D classifier (spatial_dims=3)",
        defaults=dict.fromkeys(_MONAI_NAMES, (96, 96)),
        num_classes=2,
        build=_monai,
        slice_axis="slice",
    ),
):
    register_model_source(_source)


def model_source(model: str | None) -> tuple[ModelSource, str]:
    """The source of ``--model`` and the name without its prefix; unknown names raise.

    Only clip/volume sources check the name here (timm and ``hf:`` names are checked
    by ``load_model``, which imports timm). Imports no torch.
    """
    model = model or ""
    sources = [entry for _, entry in MODEL_SOURCES.items()]
    source = max((s for s in sources if model.startswith(s.prefix)), key=lambda s: len(s.prefix))
    prefix, name = source.prefix, model[len(source.prefix) :]
    if source.defaults and name not in source.defaults:
        close = difflib.get_close_matches(name, list(source.defaults), n=1, cutoff=0.6)
        known = f"known: {', '.join(sorted(source.defaults))}."
        hint = f"did you mean {prefix}{close[0]}? ({known})" if close else known
        raise CheckpointError(f"unknown {source.description} {name!r}; {hint}")
    return source, name


def build_volume_model(
    source: ModelSource,
    name: str,
    in_channels: int,
    *,
    checkpoint: str | None,
    random_weights: bool,
    num_classes: int | None,
) -> VolumeModel:
    """The clip/volume model ``source``/``name`` in eval mode, with its weights.

    With a checkpoint and no ``num_classes`` the head size is read from the
    checkpoint (the tensors whose first dimension alone differs from a model built
    with the source's default). Raises :class:`CheckpointError` when neither a
    checkpoint nor ``random_weights`` is given: no video or volume weights ship with
    the package and nothing is downloaded.
    """
    require_weights(source, name, checkpoint, random_weights)
    assert source.build is not None  # require_weights refuses the image sources
    classes = num_classes or source.num_classes
    model = source.build(name, in_channels, classes)
    if checkpoint is not None:
        from ..pretrained import _load_by_name, _read_state_dict

        state = _read_state_dict(Path(checkpoint))
        found = None if num_classes else _head_classes(model.state_dict(), state)
        if found is not None and found != classes:
            classes, model = found, source.build(name, in_channels, found)
        _load_by_name(model, state, Path(checkpoint))
    weights = "random" if checkpoint is None else "checkpoint"
    return VolumeModel(model.eval(), source, name, weights, in_channels, classes)


def require_weights(
    source: ModelSource, name: str, checkpoint: str | None, random_weights: bool
) -> None:
    """Raise unless a clip/volume model gets weights: nothing ships, nothing downloads.

    Example:
        >>> require_weights(MODEL_SOURCES.get("monai"), "densenet121", None, False)
        Traceback (most recent call last):
        ...
        dense_readout.errors.CheckpointError: --model monai:densenet121 needs --checkpoint PATH (a local state-dict file) or --random-weights: no video or volume weights ship with dense-readout and pretrained ones cannot be downloaded (the package never goes online).
    """
    if source.build is None:
        raise InputError(f"a {source.description} reads images, not clips or volumes.")
    if checkpoint is None and not random_weights:
        raise CheckpointError(
            f"--model {source.prefix}{name} needs --checkpoint PATH (a local state-dict "
            "file) or --random-weights: no video or volume weights ship with dense-readout "
            "and pretrained ones cannot be downloaded (the package never goes online)."
        )


def _head_classes(expected: Mapping[str, Any], state: Mapping[str, Any]) -> int | None:
    """The checkpoint's class count when only the head's first dimension differs."""
    sizes = {
        int(state[key].shape[0])
        for key, tensor in expected.items()
        if key in state
        and tuple(state[key].shape) != tuple(tensor.shape)
        and tuple(state[key].shape[1:]) == tuple(tensor.shape[1:])
    }
    return sizes.pop() if len(sizes) == 1 else None
