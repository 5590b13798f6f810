"""What :func:`~dense_readout.compare.compare` returns: per-method results, a table, a figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["Comparison", "MethodResult"]


@dataclass
class MethodResult:
    """One method's outcome.

    Post-processed ``maps`` (``B×H×W`` in [0, 1]), ``raw`` maps, wall ``seconds`` (median
    over repeats), and ``error`` if it failed.

    Example:
        >>> import torch
        >>> from dense_readout.compare import MethodResult
        >>> done = MethodResult("cam", maps=torch.zeros(1, 4, 4), seconds=0.01, times=[0.01])
        >>> failed = MethodResult("gradcam", error="RuntimeError: no gradients")
        >>> done.ok, failed.ok, failed.maps is None
        (True, False, True)
    """

    name: str
    maps: Tensor | None = None
    raw: Tensor | None = None
    seconds: float = float("nan")
    times: list[float] = field(default_factory=list)
    classes_per_call: int | None = 1
    needs_gradients: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the method ran without an error."""
        return self.error is None


@dataclass
class Comparison:
    """The result of :func:`~dense_readout.compare.compare`.

    Attributes:
        inputs: the batch (CPU), ``targets``: the class per image (``B``),
        results: ``{method: MethodResult}`` in the order given,
        settings: the post-processing used (for reports),
        images: ``B×H×W×3`` RGB in [0, 1] for display.

    Example:
        >>> import numpy as np, torch
        >>> ok = MethodResult("cam", maps=torch.zeros(1, 2, 2), seconds=0.5)
        >>> broken = MethodResult("gradcam", error="RuntimeError: boom")
        >>> result = Comparison(torch.zeros(1, 3, 2, 2), torch.tensor([0]),
        ...                     {"cam": ok, "gradcam": broken}, {}, np.zeros((1, 2, 2, 3)))
        >>> list(result.maps), result.seconds, result.failures
        (['cam'], {'cam': 0.5}, {'gradcam': 'RuntimeError: boom'})
        >>> print(result.table(reference_seconds=0.25).splitlines()[2])
        | cam | 0.500 | 2.0 | 1 | ok |
    """

    inputs: Tensor
    targets: Tensor
    results: dict[str, MethodResult]
    settings: dict[str, Any]
    images: np.ndarray

    @property
    def maps(self) -> dict[str, Tensor]:
        """Post-processed maps of the methods that ran."""
        return {name: r.maps for name, r in self.results.items() if r.ok and r.maps is not None}

    @property
    def seconds(self) -> dict[str, float]:
        """Wall time per method (median over repeats), seconds for the whole batch."""
        return {name: r.seconds for name, r in self.results.items() if r.ok}

    @property
    def failures(self) -> dict[str, str]:
        """Methods that failed on this model, with the reason."""
        return {name: r.error for name, r in self.results.items() if r.error is not None}

    def table(self, reference_seconds: float | None = None) -> str:
        """A markdown table: method, seconds, ratio to ``reference_seconds``, classes per call."""
        lines = [
            "| method | seconds (batch) | × reference | classes per call | status |",
            "|---|---|---|---|---|",
        ]
        for name, r in self.results.items():
            ratio = f"{r.seconds / reference_seconds:.1f}" if reference_seconds and r.ok else "—"
            seconds = f"{r.seconds:.3f}" if r.ok else "—"
            status = "ok" if r.ok else f"failed: {r.error}"
            lines.append(
                f"| {name} | {seconds} | {ratio} | {r.classes_per_call or '—'} | {status} |"
            )
        return "\n".join(lines)

    def figure(
        self,
        class_names: Sequence[str] | None = None,
        max_images: int | None = None,
        panel_size: float = 2.2,
        cmap: str = "jet",
        alpha: float = 0.5,
        show_seconds: bool = False,
    ) -> Any:
        """Side-by-side figure: one row per image, the image then one panel per method.

        ``show_seconds`` adds each method's wall time (of this one call, no warm-up)
        to its title; for speed claims use ``benchmarks/compare_speed.py``.
        Returns the matplotlib ``Figure``.
        """
        import matplotlib as mpl

        mpl.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = list(self.maps)
        count = (
            self.images.shape[0] if max_images is None else min(max_images, self.images.shape[0])
        )
        columns = 1 + len(names)
        fig, axes = plt.subplots(
            count, columns, figsize=(panel_size * columns, panel_size * count + 0.3), squeeze=False
        )
        for row in range(count):
            target = int(self.targets[row])
            label = class_names[target] if class_names is not None else f"class {target}"
            axes[row, 0].imshow(self.images[row])
            axes[row, 0].set_title(label[:28], fontsize=8)
            for column, name in enumerate(names, start=1):
                axes[row, column].imshow(self.images[row])
                axes[row, column].imshow(
                    self.maps[name][row].numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1
                )
                title = name
                if show_seconds and row == 0:
                    title = f"{name}\n{self.results[name].seconds * 1000:.0f} ms"
                axes[row, column].set_title(title, fontsize=8)
        for axis in axes.ravel():
            axis.set_axis_off()
        fig.tight_layout()
        return fig

    def save_figure(self, path: str, **kwargs: Any) -> None:
        """Write :meth:`figure` to ``path`` (PNG/PDF/SVG by extension)."""
        import matplotlib.pyplot as plt

        fig = self.figure(**kwargs)
        fig.savefig(path, dpi=110)
        plt.close(fig)
