"""Model outputs that are not tensors: Hugging Face's ``ImageClassifierOutput`` and kin.

``transformers`` classifiers return a ``ModelOutput`` (``.logits``, ``.loss``, ...)
instead of a ``B×K`` tensor. Captum and pytorch-grad-cam index the output as a
tensor, so every place that calls the model itself passes it through
:func:`logits_only` first. The check is by the class's module name, so nothing
here imports ``transformers``.

Example:
    >>> import torch
    >>> from dense_readout._outputs import LogitsOnly, logits_of
    >>> class Output(dict):  # stands in for transformers' ImageClassifierOutput
    ...     logits = torch.ones(1, 3)
    >>> logits_of(Output()).shape
    torch.Size([1, 3])
    >>> logits_of(torch.zeros(2, 5)).shape  # tensors pass through
    torch.Size([2, 5])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

__all__ = [
    "TRANSFORMERS_LRP_REFUSAL",
    "LogitsOnly",
    "is_transformers_model",
    "logits_of",
    "logits_only",
]

# Why dense_readout.lrp refuses transformers models ({} is the class name).
TRANSFORMERS_LRP_REFUSAL = (
    "LRP refinement does not support {} (Hugging Face transformers): its blocks add their "
    "shortcuts inside their own forward, which has no LRP rule here (only timm and "
    "torchvision blocks are canonized), so relevance is not conserved. Use the readout "
    "itself, dense_readout.gradcam or dense_readout.captum for this model, or the timm "
    "equivalent for LRP."
)


def is_transformers_model(model: object) -> bool:
    """True if ``model``'s class (or a base class) comes from the ``transformers`` package."""
    return any(klass.__module__.startswith("transformers.") for klass in type(model).__mro__)


def logits_of(output: Any) -> Any:
    """The logits tensor of a model output.

    A tensor as is, ``output.logits`` of a ``ModelOutput`` (or ``output["logits"]`` of a
    mapping); anything else unchanged.
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, Mapping) and isinstance(output.get("logits"), Tensor):
        return output["logits"]
    return output


class LogitsOnly(nn.Module):
    """Wraps a classifier so that calling it returns the logits tensor (``B×K``).

    The wrapped model is ``self.model`` (its modules, hooks and parameters are
    shared, not copied); the wrapper starts in the model's train/eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        output = self.model(*args, **kwargs)
        if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
            return output[0]  # return_dict=False: (logits, ...) when no labels are given
        return logits_of(output)


def logits_only(model: Any) -> Any:
    """``LogitsOnly(model)`` for a ``transformers`` model, ``model`` itself otherwise."""
    if isinstance(model, nn.Module) and is_transformers_model(model):
        return LogitsOnly(model)
    return model
