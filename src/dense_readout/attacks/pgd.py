"""L∞ projected gradient descent (Madry et al. 2018) with every iteration read out.

The paper's appendix A.9 runs a targeted PGD attack and watches it with the dense
readout: the attack wins by flipping *enough cells* to the target class for them to
dominate the mean, not by moving the whole embedding. :func:`pgd` records, at every
step, what the readout sees — per-cell top-1 class and probability, the target's
per-cell score and rank, and the image logits — from the same forward pass the
attack needs for its gradient, so the recording costs nothing beyond the attack.

Why our own loop and not ``torchattacks.PGD``: that class runs all iterations inside
one ``forward`` and exposes no per-step hook, so recording would mean re-implementing
it anyway. This loop follows torchattacks' update rule exactly (cross-entropy on the
logits, ``x ← x ± α·sign(∇)``, projection on the ε-ball and on [0, 1], uniform random
start), and a test checks that both give the same adversarial images on the same seed.

Images are perturbed in pixel space ([0, 1]); the model's own normalisation is applied
inside (``mean``/``std``), so ε means what it says in pixels.

Why float64 by default: every step moves each pixel by ``α·sign(∇)``, so an entry of
the gradient near zero whose float32 rounding (which depends on the thread count's
summation order) flips its sign changes the trajectory, and the runs diverge within a
few steps (chelsea → sombrero: 28 vs 32 target cells at step 20 at 1 vs 2 threads).
In float64 the attack is bit-identical at 1 and 2 threads (tested); ``dtype=None``
runs in the model's own precision, ~3–4× faster on CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..readout import DenseReadout, ReadoutResult
from ..validation import check_eval_mode, check_images, check_targets

__all__ = ["DEFAULT_ALPHA", "DEFAULT_EPS", "DEFAULT_STEPS", "AttackTrace", "pgd"]

DEFAULT_EPS = 8 / 255  # the usual ImageNet L∞ budget; the paper does not state its own
DEFAULT_ALPHA = 2 / 255
DEFAULT_STEPS = 20  # the paper's Fig. 11


@dataclass
class AttackTrace:
    """What the readout saw at every PGD iteration (index 0 = the clean image).

    Shapes: ``T+1`` recorded steps for ``steps=T``, batch ``B``, ``K`` classes, an
    ``h×w`` grid. ``images`` are in pixel space [0, 1].

    Attributes:
        images: ``(T+1)×B×3×H×W`` the image at each step (clean first, final last).
        logits: ``(T+1)×B×K`` the model's image logits at each step.
        cell_labels: ``(T+1)×B×h×w`` per-cell top-1 class.
        cell_probs: ``(T+1)×B×h×w`` per-cell top-1 softmax probability.
        target_scores: ``(T+1)×B×h×w`` the target class's per-cell score ``Z``.
        target_ranks: ``(T+1)×B×h×w`` rank of the target in each cell (0 = top-1).
        mean_residual: ``(T+1)×B`` max |mean(Z) − logits| (≈ 0 for exact models).
        target: ``B`` the target class (targeted) or the true class (untargeted).
        targeted: whether the attack pushed toward ``target`` or away from it.
        exact: whether the model's readout is an exact decomposition of its logits.

    Example:
        >>> import timm, torch
        >>> from dense_readout.attacks import pgd
        >>> model = timm.create_model("resnet18", num_classes=5).eval()
        >>> trace = pgd(model, torch.rand(2, 3, 64, 64), target=3, true_class=0, steps=2,
        ...             generator=torch.Generator().manual_seed(0))
        >>> trace.steps, tuple(trace.images.shape), tuple(trace.cell_labels.shape), trace.targeted
        (2, (3, 2, 3, 64, 64), (3, 2, 2, 2), True)
        >>> tuple(trace.predictions().shape), tuple(trace.target_cell_fraction().shape)
        ((3, 2), (3, 2))
        >>> bool(((trace.success_step() >= -1) & (trace.success_step() <= 2)).all())
        True
    """

    images: Tensor
    logits: Tensor
    cell_labels: Tensor
    cell_probs: Tensor
    target_scores: Tensor
    target_ranks: Tensor
    mean_residual: Tensor
    target: Tensor
    targeted: bool
    exact: bool

    @property
    def steps(self) -> int:
        """Number of PGD iterations (recorded steps minus the clean image)."""
        return int(self.logits.shape[0]) - 1

    def predictions(self) -> Tensor:
        """``(T+1)×B`` image-level top-1 class at each step."""
        return self.logits.argmax(dim=-1)

    def target_cell_fraction(self) -> Tensor:
        """``(T+1)×B`` fraction of cells whose top-1 is the target."""
        hits = self.cell_labels == self.target[None, :, None, None]
        return hits.float().mean(dim=(-2, -1))

    def success_step(self) -> Tensor:
        """``B`` first step whose image prediction hits the goal; ``-1`` if it never does.

        The goal is the target (targeted) or any class but the true one (untargeted).
        """
        predictions = self.predictions()
        hit = (
            predictions == self.target[None] if self.targeted else predictions != self.target[None]
        )
        any_hit = hit.any(dim=0)
        first = hit.float().argmax(dim=0)
        return torch.where(any_hit, first, torch.full_like(first, -1))


def _check_budget(eps: float, alpha: float, steps: int) -> None:
    if not 0 < eps <= 1:
        raise InputError(f"eps must be in (0, 1] (pixel units, e.g. 8/255), got {eps}.")
    if not 0 < alpha <= 1:
        raise InputError(f"alpha (step size) must be in (0, 1], e.g. 2/255; got {alpha}.")
    if int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps}.")


def _check_pixels(images: Tensor) -> None:
    check_images(images)
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise InputError(
            f"PGD perturbs pixel-space images in [0, 1], got [{float(images.min()):.3g}, "
            f"{float(images.max()):.3g}]. Pass the un-normalised image and the model's "
            "mean/std (e.g. preprocess.geometry(pil) → tensor, mean=preprocess.mean)."
        )


class _Recorder:
    """Collects one readout per step into the trace's tensors."""

    def __init__(self, target: Tensor) -> None:
        self.target = target
        self.rows: dict[str, list[Tensor]] = {}

    def add(self, pixels: Tensor, result: ReadoutResult) -> None:
        scores = result.scores.detach()
        probs = scores.softmax(dim=1)
        top_probs, top_labels = probs.max(dim=1)
        index = self.target.view(-1, 1, 1, 1).expand(-1, 1, *scores.shape[-2:])
        target_scores = scores.gather(1, index)[:, 0]
        ranks = (scores > target_scores[:, None]).sum(dim=1)
        residual = (scores.mean(dim=(2, 3)) - result.logits.detach()).abs().amax(dim=1)
        for key, value in (
            ("images", pixels.detach()),
            ("logits", result.logits.detach()),
            ("cell_labels", top_labels),
            ("cell_probs", top_probs),
            ("target_scores", target_scores),
            ("target_ranks", ranks),
            ("mean_residual", residual),
        ):
            self.rows.setdefault(key, []).append(value.cpu())

    def trace(self, targeted: bool, exact: bool, dtype: torch.dtype) -> AttackTrace:
        """Stack the rows; floating fields in ``dtype`` (the caller's image precision)."""
        stacked = {
            key: torch.stack(values).to(dtype if values[0].is_floating_point() else None)
            for key, values in self.rows.items()
        }
        return AttackTrace(**stacked, target=self.target.cpu(), targeted=targeted, exact=exact)


def pgd(
    model: nn.Module,
    images: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    true_class: int | Sequence[int] | Tensor | None = None,
    eps: float = DEFAULT_EPS,
    alpha: float = DEFAULT_ALPHA,
    steps: int = DEFAULT_STEPS,
    random_start: bool = True,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> AttackTrace:
    """L∞ PGD on ``images`` (pixels in [0, 1]) with a readout recorded at every step.

    Targeted when ``target`` is given (class index per image or one for all), else
    untargeted away from ``true_class`` (default: the clean prediction). The model
    sees ``(x − mean) / std``. ``steps`` iterations cost ``steps`` forward+backward
    passes plus one forward for the final image. The attack runs in ``dtype`` (default
    float64, on a copy of the model, so that the trajectory does not depend on the
    thread count; ``None``: the model's own dtype); the trace is in the images' dtype.

    Example:
        >>> import timm, torch
        >>> from dense_readout.attacks import pgd
        >>> model = timm.create_model("resnet18", num_classes=5).eval()
        >>> x = torch.rand(1, 3, 64, 64)
        >>> seed = torch.Generator().manual_seed(0)
        >>> trace = pgd(model, x, target=3, true_class=0, steps=2, generator=seed)
        >>> tuple(trace.cell_labels.shape), trace.steps
        ((3, 1, 2, 2), 2)
        >>> bool(((trace.images - x).abs() <= 8 / 255 + 1e-6).all())
        True
    """
    _check_budget(eps, alpha, steps)
    _check_pixels(images)
    check_eval_mode(model, "the attack's readout")
    model, images, caller_dtype = _in_precision(model, images, dtype)
    mean_t = torch.tensor(list(mean), device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), device=images.device, dtype=images.dtype).view(1, -1, 1, 1)

    def normalise(pixels: Tensor) -> Tensor:
        return (pixels - mean_t) / std_t

    readout = DenseReadout(model)
    batch = images.shape[0]
    with torch.no_grad():
        clean = readout(normalise(images))
    goal = _resolve_goal(target, true_class, clean, readout.num_classes, batch)
    targeted = target is not None
    recorder = _Recorder(goal)
    recorder.add(images, clean)  # step 0 is the clean image, as Fig. 11 (a) shows it

    adversarial = images.detach().clone()
    if random_start:
        # drawn in float32 whatever the precision: the same seed, the same start
        noise = torch.empty(images.shape).uniform_(-eps, eps, generator=generator)
        adversarial = (adversarial + noise.to(images)).clamp(0, 1).detach()
    loss_fn = nn.CrossEntropyLoss()
    for step in range(int(steps)):
        adversarial.requires_grad_(True)
        result = readout(normalise(adversarial), grad=True)
        if step > 0:  # step 0's input is the random start, not an iterate
            recorder.add(adversarial, result)
        loss = loss_fn(result.logits, goal.to(result.logits.device))
        cost = -loss if targeted else loss
        (gradient,) = torch.autograd.grad(cost, adversarial)
        adversarial = adversarial.detach() + alpha * gradient.sign()
        delta = (adversarial - images).clamp(-eps, eps)
        adversarial = (images + delta).clamp(0, 1).detach()
    with torch.no_grad():
        recorder.add(adversarial, readout(normalise(adversarial)))
    return recorder.trace(targeted, readout.exact, caller_dtype)


def _in_precision(
    model: nn.Module, images: Tensor, dtype: torch.dtype | None
) -> tuple[nn.Module, Tensor, torch.dtype]:
    """The model (a copy when converted) and images in ``dtype``; the images' own dtype."""
    caller = images.dtype
    if dtype is None:
        return model, images, caller
    if not dtype.is_floating_point:
        raise InputError(f"dtype must be a floating type such as torch.float64, got {dtype}.")
    weights = next(iter(model.parameters()), None)
    if weights is not None and weights.dtype != dtype:
        model = copy.deepcopy(model).to(dtype)  # never change the caller's model
    return model, images.to(dtype), caller


def _resolve_goal(
    target: int | Sequence[int] | Tensor | None,
    true_class: int | Sequence[int] | Tensor | None,
    clean: ReadoutResult,
    num_classes: int,
    batch: int,
) -> Tensor:
    truth = (
        clean.logits.argmax(dim=1).cpu()
        if true_class is None
        else check_targets(true_class, batch, num_classes)
    )
    if target is None:
        return truth
    goal = check_targets(target, batch, num_classes)
    same = goal == truth
    if bool(same.any()):
        which = same.nonzero().flatten().tolist()
        raise InputError(
            f"The target class equals the true (or clean predicted) class for image(s) "
            f"{which}: a targeted attack needs another class. Pick a different --target, "
            "or run an untargeted attack (no target)."
        )
    return goal
