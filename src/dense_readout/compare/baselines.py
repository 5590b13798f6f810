"""Extra compare methods: Integrated Gradients and two reference maps for the benchmark.

* ``integrated-gradients``: Captum's ``IntegratedGradients`` on the input (black
  baseline, i.e. zero after normalisation; ``n_steps`` from the method options,
  default 16), summed over channels.
* ``random``: uniform noise on a 7×7 grid, seeded by the image content, so the
  same image gets the same map in every process and after a resume. The chance
  level of every faithfulness and localization score.
* ``edge-detector``: the Sobel gradient magnitude of the input. It never reads
  the model, so the model-parameter randomisation test must find it unchanged
  (Adebayo et al. 2018 show that edge detectors resemble many saliency maps).

Example:
    >>> import timm, torch
    >>> from dense_readout.compare import compare
    >>> model = timm.create_model("test_resnet", num_classes=5).eval()
    >>> x = torch.randn(2, 3, 32, 32)
    >>> first = compare(model, x, [0, 1], methods=["random", "edge-detector"]).maps
    >>> again = compare(model, x, [3, 4], methods=["random"]).maps
    >>> bool(torch.equal(first["random"], again["random"])), tuple(first["edge-detector"].shape)
    (True, (2, 32, 32))
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import Tensor

from .methods import MethodContext, SaliencyMethod, register_method
from .wrappers import CaptumMethod

__all__ = ["EdgeDetector", "RandomMap", "image_seed"]


def image_seed(image: Tensor) -> int:
    """A seed from an image's bytes (float32): equal images, equal seeds, in any process.

    Example:
        >>> import torch
        >>> image_seed(torch.ones(3, 2, 2)) == image_seed(torch.ones(3, 2, 2))
        True
    """
    data = image.detach().float().cpu().contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


class RandomMap(SaliencyMethod):
    """Uniform noise on a ``grid``×``grid`` grid, seeded by each image's content."""

    needs_gradients = False
    classes_per_call = None  # the map does not depend on the class

    def __init__(self, grid: int = 7) -> None:
        self.name, self.grid = "random", grid

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``B×grid×grid`` noise (``targets`` unused)."""
        maps = []
        for image in inputs:
            generator = torch.Generator().manual_seed(image_seed(image))
            maps.append(torch.rand(self.grid, self.grid, generator=generator))
        return torch.stack(maps)


class EdgeDetector(SaliencyMethod):
    """Sobel gradient magnitude of the input, summed over channels (model-independent)."""

    needs_gradients = False
    classes_per_call = None

    def __init__(self) -> None:
        self.name = "edge-detector"
        kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.kernels = torch.stack([kernel, kernel.t()]).unsqueeze(1)  # 2×1×3×3

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """``B×H×W`` edge magnitude (``targets`` unused)."""
        images = inputs.detach().float().cpu()
        flat = images.reshape(-1, 1, *images.shape[-2:])
        gradients = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), self.kernels)
        magnitude = gradients.pow(2).sum(dim=1).sqrt()
        return magnitude.reshape(images.shape).sum(dim=1)


@register_method("random", "uniform noise on a 7x7 grid, seeded by the image (chance level)")
def _random_factory(context: MethodContext) -> SaliencyMethod:
    return RandomMap()


@register_method(
    "edge-detector", "Sobel edge magnitude of the input (ignores the model; a sanity reference)"
)
def _edge_factory(context: MethodContext) -> SaliencyMethod:
    return EdgeDetector()


@register_method(
    "integrated-gradients",
    "Captum IntegratedGradients on the input (zero baseline, n_steps=16 unless given)",
)
def _integrated_gradients_factory(context: MethodContext) -> SaliencyMethod:
    from captum.attr import IntegratedGradients

    options = {"n_steps": 16, "internal_batch_size": 16, **context.options}
    return CaptumMethod(IntegratedGradients, context, name="integrated-gradients", **options)
