"""The report's example strip: the first images of a run (as PNG) and every method's map of them.

Example:
    >>> import torch
    >>> from dense_readout.compare.bench.examples import example_images
    >>> from dense_readout.evaluation.protocol import Protocol
    >>> from dense_readout.preprocessing import Preprocess
    >>> rows = example_images(Protocol(Preprocess()), 1, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    >>> [(row["position"], row["method"]) for row in rows]
    [(0, '__image__')]
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...evaluation.protocol import Protocol
from .metrics import MapBatch

__all__ = ["add_example_maps", "example_images"]


def add_example_maps(count: int, rows: list[dict], maps: MapBatch, positions: Tensor) -> None:
    """Rows of the first ``count`` positions keep a 56×56 copy of their map for the report."""
    small = torch.nn.functional.adaptive_avg_pool2d(maps.maps().unsqueeze(1), 56)[:, 0]
    for row, position, one in zip(rows, positions.tolist(), small, strict=True):
        if position < count:
            row["example_map"] = one.numpy().round(3).tolist()


def example_images(protocol: Protocol, count: int, inputs: Tensor, positions: Tensor) -> list[dict]:
    """Rows holding the example images (the crop the model saw) as PNG data."""
    import base64
    import io

    from PIL import Image

    pre = protocol.preprocess
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    rows = []
    for image, position in zip(inputs, positions.tolist(), strict=True):
        if position >= count:
            continue
        rgb = ((image * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(rgb).resize((112, 112)).save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        rows.append({"position": position, "method": "__image__", "png": data})
    return rows
