"""Token sequences that a head averages: the tokens put back on their spatial grid.

MLP-Mixer, ResMLP, LeViT, Twins, EfficientFormer, MViTv2 and Hiera (timm) end their
features in a sequence ``B×(prefix+N)×C`` whose ``N`` patch tokens are the cells of
the last stage's ``h×w`` grid in raster order (row by row: each family flattens its
last map with ``flatten(2).transpose(1, 2)``, and Hiera's unrolled order is undone
once its last pooling has consumed every unroll level). Their head pools the patch
tokens by the mean, so the readout is the head applied to each token; class or
distillation tokens (``prefix``) are constants the pool does not read.

Whether a head pools by the mean is tested, not assumed: for any head ``g`` that
pools by the mean, ``g(x) == g([prefix, mean(patches)])`` (the pooled vector is the
same), and a max-pooled head fails it. A head that reads only a class token which
``forward_features`` already computed (CaiT, ConViT) passes that identity trivially, so
it is tested first, on its own: :func:`reads_prefix_only`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import UnsupportedModelError

__all__ = ["one_token_sequences", "pools_tokens_by_mean", "reads_prefix_only", "tokens_to_grid"]


def pools_tokens_by_mean(head: Callable[[Tensor], Tensor], tokens: Tensor, prefix: int) -> bool:
    """Whether ``head`` reads the patch tokens of ``tokens`` only through their mean.

    Compares ``head(tokens)`` with ``head`` of the sequence ``[prefix tokens, mean of
    the patch tokens]`` on a random sequence (float64 not needed: the pooled vectors
    agree to rounding, a class-token head differs by O(1)).

    Example:
        >>> import torch
        >>> mean_head = lambda x: x.mean(1) @ torch.ones(4, 2)
        >>> cls_head = lambda x: x[:, 0] @ torch.ones(4, 2)
        >>> tokens = torch.randn(2, 6, 4)
        >>> pools_tokens_by_mean(mean_head, tokens, 0), pools_tokens_by_mean(cls_head, tokens, 0)
        (True, False)
    """
    if reads_prefix_only(head, tokens, prefix):
        return False  # the identity holds trivially, but the patches are never read
    with torch.no_grad():
        full = head(tokens)
        pooled = tokens[:, prefix:].mean(dim=1, keepdim=True)
        short = head(torch.cat([tokens[:, :prefix], pooled], dim=1))
    return _same(full, short)


def reads_prefix_only(head: Callable[[Tensor], Tensor], tokens: Tensor, prefix: int) -> bool:
    """Whether ``head`` ignores the patch tokens: it reads only the ``prefix`` tokens.

    True for a class-token head on a sequence whose class token already attended to
    the patches inside ``forward_features`` (CaiT's class-attention blocks, ConViT):
    the head is then a function of that token alone, and the readout can only be the
    paper's [CLS] control (the same head on each patch token), never exact.

    Example:
        >>> import torch
        >>> cls_head = lambda x: x[:, 0] @ torch.ones(4, 2)
        >>> mean_head = lambda x: x[:, 1:].mean(1) @ torch.ones(4, 2)
        >>> tokens = torch.randn(2, 6, 4)
        >>> reads_prefix_only(cls_head, tokens, 1), reads_prefix_only(mean_head, tokens, 1)
        (True, False)
    """
    if prefix < 1:
        return False
    generator = torch.Generator().manual_seed(1)
    other = torch.randn(tokens[:, prefix:].shape, generator=generator).to(tokens)
    with torch.no_grad():
        full = head(tokens)
        moved = head(torch.cat([tokens[:, :prefix], other], dim=1))
    return _same(full, moved)


def _same(first: object, second: object) -> bool:
    """Two head outputs equal to rounding (float64 not needed: a real difference is O(1))."""
    if not isinstance(first, Tensor) or not isinstance(second, Tensor):
        return False
    if first.shape != second.shape:
        return False
    scale = max(1.0, float(first.abs().max()))
    return bool((first - second).abs().max() <= 1e-4 * scale)


def one_token_sequences(cells: Tensor, prefix: int) -> Tensor:
    """``N×C`` cells as ``N`` sequences ``[prefix zeros, cell]`` (the pool reads only the cell)."""
    sequences = cells[:, None, :]
    if prefix:
        sequences = torch.cat(
            [cells.new_zeros(cells.shape[0], prefix, cells.shape[1]), sequences], 1
        )
    return sequences


def tokens_to_grid(tokens: Tensor, prefix: int, input_size: tuple[int, int] | None) -> Tensor:
    """``B×(prefix+N)×C`` → ``B×C×h×w``: the ``N`` patch tokens in raster order.

    ``(h, w)`` is the grid of the input's aspect ratio with ``h·w = N`` (the
    network's total stride ``s`` with ``(H//s)·(W//s) = N``), square if the input
    size is unknown.

    Example:
        >>> import torch
        >>> grid = tokens_to_grid(torch.arange(13.0).view(1, 13, 1), 1, (64, 192))
        >>> tuple(grid.shape), grid[0, 0, 1].tolist()  # 2 rows of 6 (stride 32), class token dropped
        ((1, 1, 2, 6), [7.0, 8.0, 9.0, 10.0, 11.0, 12.0])
    """
    patches = tokens[:, prefix:]
    height, width = token_grid_size(patches.shape[1], input_size)
    return patches.reshape(patches.shape[0], height, width, -1).permute(0, 3, 1, 2)


def token_grid_size(tokens: int, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """``(h, w)`` with ``h·w = tokens`` for ``input_size`` (square when that is unknown)."""
    if input_size is not None:
        height, width = int(input_size[0]), int(input_size[1])
        # networks downsample by powers of two: try those strides first, then any other
        strides = sorted(range(1, max(height, width) + 1), key=lambda s: (s & (s - 1) != 0, s))
        for stride in strides:
            if (height // stride) * (width // stride) == tokens:
                return height // stride, width // stride
    side = round(tokens**0.5)
    if side * side == tokens:
        return side, side
    raise UnsupportedModelError(
        f"Cannot arrange {tokens} tokens into a grid for input size {input_size}; pass "
        "DenseReadout(model, features=..., head=...)."
    )
