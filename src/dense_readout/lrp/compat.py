"""What keeps an LRP call from changing the model on zennit 0.5.1 and on zennit 1.0.

zennit 1.0 changed two things that leave traces in a model after an LRP call
(minimal reproductions in docs/lrp.md, "zennit 0.5.1 and 1.0"):

* its rules modify parameters with ``module.load_state_dict(..., assign=True)``
  (``zennit.core.ParamMod``) and restore them the same way, which puts *new*
  ``Parameter`` objects into every ruled module: the values are the same, but an
  optimizer created before the call no longer holds the model's parameters.
  :func:`parameters_kept` puts the original objects back.
* its ``MergeBatchNorm`` restores with ``object.__setattr__``, which leaves a merged
  bias in ``state_dict`` of a convolution that had none and instance attributes that
  shadow the parameters. :class:`~dense_readout.lrp.canonizers.MergeBatchNormPairs`
  does not use it (it swaps ``.data`` only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["parameters_kept"]


@contextlib.contextmanager
def parameters_kept(root: nn.Module) -> Iterator[None]:
    """Inside, modules may have their ``Parameter`` objects replaced; after, the originals are back.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> weight = layer.weight
        >>> with parameters_kept(layer):
        ...     _ = layer.load_state_dict({"weight": weight.data.clone()}, strict=False, assign=True)
        ...     layer.weight is weight
        False
        >>> layer.weight is weight
        True
    """
    slots = [
        (module, name, param)
        for module in root.modules()
        for name, param in module._parameters.items()
        if param is not None
    ]
    try:
        yield
    finally:
        for module, name, param in slots:
            if module._parameters.get(name) is not param:
                module._parameters[name] = param
