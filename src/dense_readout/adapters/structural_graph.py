"""The structural adapter's graph work.

Find a model's last global average pool in its ``torch.fx`` graph and split the graph
there into a backbone and a per-sample tail.

Example:
    >>> import torch
    >>> from torch import fx, nn
    >>> from dense_readout.adapters.structural_graph import split_graph
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                       nn.Linear(4, 2)).eval()
    >>> split = split_graph(model, fx.symbolic_trace(model), torch.zeros(1, 3, 16, 16))
    >>> split.layout, split.channels, split.num_classes, split.nonaffine_ops
    ('NCHW', 4, 2, [])
    >>> tuple(split.backbone(torch.zeros(1, 3, 16, 16)).shape)
    (1, 4, 14, 14)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..errors import UnsupportedModelError
from .base import unsupported_message

__all__ = ["GraphSplit", "ProbeError", "split_graph"]


class ProbeError(Exception):
    """The model did not run on the probe input (the caller retries on a real input).

    Example:
        >>> import torch
        >>> from torch import fx, nn
        >>> fixed = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))  # 2×2 RGB inputs only
        >>> try:
        ...     split_graph(fixed, fx.symbolic_trace(fixed), torch.zeros(1, 3, 4, 4))
        ... except ProbeError as error:
        ...     print(str(error)[:20])
        on a 3×4×4 probe: Ru
    """


@dataclass
class GraphSplit:
    """A model split at its last global average pool.

    ``backbone``: input → the pool's input (``layout``: ``NCHW``, ``NHWC`` or
    ``tokens``, ``B×N×C``); ``tail``: that map → logits (the pool included, so it
    takes a map of any size); ``nonaffine_ops``: names of functional ops in the tail
    that are not affine; ``shape_ops_only``: the tail's functional ops only reshape
    (its modules then say everything); ``head_leaves``: the leaf modules of the tail;
    ``spatial_dims``: the grid's rank (2, or 3 for a ``T×H×W`` / ``D×H×W`` grid).

    Example:
        >>> import torch
        >>> from torch import fx, nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 2), nn.ReLU()).eval()
        >>> split = split_graph(model, fx.symbolic_trace(model), torch.zeros(1, 3, 8, 8))
        >>> [type(m).__name__ for m in split.head_leaves]
        ['AdaptiveAvgPool2d', 'Flatten', 'Linear', 'ReLU']
        >>> tuple(split.tail(torch.ones(5, 4, 1, 1)).shape)  # five one-cell maps
        (5, 2)
    """

    backbone: Callable[[Tensor], Tensor]
    tail: Callable[[Tensor], Tensor]
    layout: str
    channels: int
    num_classes: int
    nonaffine_ops: list[str] = field(default_factory=list)
    shape_ops_only: bool = True
    head_leaves: list[nn.Module] = field(default_factory=list)
    spatial_dims: int = 2


_SHAPE_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.permute,
    torch.transpose,
    torch.clone,
    operator.getitem,
    getattr,
    F.dropout,
}
_SHAPE_METHODS = {
    "flatten",
    "view",
    "reshape",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "permute",
    "transpose",
    "size",
    "dim",
    "clone",
    "float",
    "to",
    "type_as",
}
# affine in the pooled vector: sums always, products when one factor is constant
_SUMS = {operator.add, operator.sub, operator.neg, torch.add, torch.sub, "add", "sub", "neg"}
_PRODUCTS = {operator.mul, operator.truediv, torch.mul, torch.div, "mul", "div", "mean"}


def split_graph(model: nn.Module, traced: fx.GraphModule, probe: Tensor) -> GraphSplit:
    """Split ``traced`` (``model``'s fx graph) at its last usable global average pool.

    Raises :class:`UnsupportedModelError` saying why when there is none (no pool, a
    multi-cell pool read flattened, a tail that reads more than the pooled vector).
    """
    try:
        with torch.no_grad():
            _ShapeRecorder(traced).run(probe)
    except Exception as error:
        size = "×".join(str(n) for n in probe.shape[1:])
        raise ProbeError(f"on a {size} probe: {type(error).__name__}: {error}"[:300]) from error
    nodes = list(traced.graph.nodes)
    modules = dict(traced.named_modules())
    output = nodes[-1]
    result = output.args[0]
    if not isinstance(result, fx.Node) or not _is_tensor(result):
        raise UnsupportedModelError(
            unsupported_message(model, "its forward does not return one logits tensor")
        )
    candidates = [(node, layout) for node in nodes if (layout := _global_mean(node, modules))]
    if not candidates:
        raise UnsupportedModelError(unsupported_message(model, _no_pool_reason(nodes, modules)))
    # a pool over a single cell (e.g. adaptive_avg_pool2d(·, 1) after mean(keepdim)) is an
    # identity, not the grid: split at the last pool over more than one cell
    candidates = [c for c in candidates if _pooled_cells(*c) > 1] or candidates
    problems = []
    for pool, layout in reversed(candidates):
        tail, problem = _tail_of(pool, output, nodes)
        if problem is None:
            return _build(traced, nodes, modules, pool, tail, layout, result)
        problems.append(problem)
    raise UnsupportedModelError(unsupported_message(model, problems[0]))


def _build(
    traced: fx.GraphModule,
    nodes: list[fx.Node],
    modules: dict[str, nn.Module],
    pool: fx.Node,
    tail: set[fx.Node],
    layout: str,
    result: fx.Node,
) -> GraphSplit:
    grid_node = pool.args[0]
    assert isinstance(grid_node, fx.Node)
    shape = grid_node.meta["shape"]
    channels = int(shape[1] if layout == "NCHW" else shape[-1])
    nonaffine, shape_only = _classify_tail(tail, pool)
    leaves = [modules[str(n.target)] for n in nodes if n in tail and n.op == "call_module"]
    if pool.op == "call_module":
        leaves.insert(0, modules[str(pool.target)])
    return GraphSplit(
        backbone=_backbone_module(traced, nodes, grid_node),
        tail=_tail_module(traced, nodes, pool, tail),
        layout=layout,
        channels=channels,
        num_classes=int(result.meta["shape"][-1]),
        nonaffine_ops=nonaffine,
        shape_ops_only=shape_only,
        head_leaves=leaves,
        spatial_dims=len(shape) - 2 if layout != "tokens" else 2,
    )


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once and records each tensor node's shape in ``node.meta["shape"]``."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, Tensor):
            n.meta["shape"] = tuple(result.shape)
        return result


def _pooled_cells(pool: fx.Node, layout: str) -> int:
    """How many cells the global pool ``pool`` averages (its input's grid size)."""
    shape = pool.args[0].meta["shape"] if isinstance(pool.args[0], fx.Node) else ()
    grid = {"NCHW": shape[2:], "NHWC": shape[1:-1], "tokens": shape[1:2]}[layout]
    return int(math.prod(grid))


def _is_tensor(node: fx.Node) -> bool:
    return "shape" in node.meta


def _rank(node: object) -> int | None:
    if isinstance(node, fx.Node) and _is_tensor(node):
        return len(node.meta["shape"])
    return None


def _is_one(size: object) -> bool:
    return size == 1 or (isinstance(size, (tuple, list)) and all(s == 1 for s in size))


def _argument(node: fx.Node, index: int, name: str) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


_POOL_RANKS = {nn.AdaptiveAvgPool2d: 4, nn.AdaptiveAvgPool3d: 5}
_FUNCTIONAL_POOL_RANKS = {F.adaptive_avg_pool2d: 4, F.adaptive_avg_pool3d: 5}


def _global_mean(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """``NCHW``/``NHWC``/``tokens`` if ``node`` averages a whole grid, else None.

    ``NCHW`` means channels first at any grid rank (``B×C×T×H×W`` for video/volumes).
    """
    rank = _rank(node.args[0]) if node.args else None
    if node.op == "call_module":
        module = modules.get(str(node.target))
        pool_rank = next((r for t, r in _POOL_RANKS.items() if type(module) is t), None)
        global_pool = module is not None and _is_one(getattr(module, "output_size", None))
        return "NCHW" if global_pool and pool_rank == rank else None
    if node.op == "call_function" and node.target in _FUNCTIONAL_POOL_RANKS:
        one = _is_one(_argument(node, 1, "output_size"))
        return "NCHW" if one and rank == _FUNCTIONAL_POOL_RANKS[node.target] else None
    is_mean = (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    )
    dims = _argument(node, 1, "dim")
    if not is_mean or rank is None or dims is None:
        return None
    if not isinstance(dims, (int, tuple, list)):
        return None
    axes = {int(d) % rank for d in (dims if isinstance(dims, (tuple, list)) else [dims])}
    layouts = {(4, frozenset({2, 3})): "NCHW", (4, frozenset({1, 2})): "NHWC"}
    layouts[(5, frozenset({2, 3, 4}))] = "NCHW"
    layouts[(3, frozenset({1}))] = "tokens"
    return layouts.get((rank, frozenset(axes)))


def _tail_of(
    pool: fx.Node, output: fx.Node, nodes: list[fx.Node]
) -> tuple[set[fx.Node], str | None]:
    """The nodes after ``pool`` and, if the tail reads anything but the pool, why not."""
    tail: set[fx.Node] = set()
    frontier = list(pool.users)
    while frontier:
        node = frontier.pop()
        if node not in tail:
            tail.add(node)
            frontier.extend(node.users)
    if output not in tail:
        return tail, f"its last global average pool ({pool.name}) does not reach the output"
    variable = _input_dependent(nodes)
    for node in tail:
        for source in node.all_input_nodes:
            if source is not pool and source not in tail and source in variable:
                return tail, (
                    f"the layers after its global average pool ({pool.name}) also read "
                    f"{source.name}, not only the pooled vector, so they are not a per-cell head"
                )
    return tail, None


def _input_dependent(nodes: list[fx.Node]) -> set[fx.Node]:
    variable: set[fx.Node] = set()
    for node in nodes:
        if node.op == "placeholder" or any(n in variable for n in node.all_input_nodes):
            variable.add(node)
    return variable


def _classify_tail(tail: set[fx.Node], pool: fx.Node) -> tuple[list[str], bool]:
    """Names of non-affine functional ops in the tail; whether all only reshape."""
    nonaffine: list[str] = []
    shape_only = True
    for node in tail:
        if node.op not in ("call_function", "call_method"):
            continue
        target = node.target
        if target in _SHAPE_FUNCTIONS or target in _SHAPE_METHODS:
            continue
        shape_only = False
        if target in _SUMS:
            continue
        tensors = [n for n in node.all_input_nodes if (n in tail or n is pool) and _is_tensor(n)]
        if target in _PRODUCTS and (
            len(tensors) <= 1 and (len(node.args) < 2 or node.args[1] not in tensors)
        ):
            continue
        nonaffine.append(getattr(target, "__name__", str(target)))
    return nonaffine, shape_only


def _backbone_module(
    traced: fx.GraphModule, nodes: list[fx.Node], grid_node: fx.Node
) -> fx.GraphModule:
    needed: set[fx.Node] = set()
    frontier = [grid_node]
    while frontier:
        node = frontier.pop()
        if node not in needed:
            needed.add(node)
            frontier.extend(node.all_input_nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if node in needed or node.op == "placeholder":
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[grid_node])
    return fx.GraphModule(traced, graph, class_name="Backbone")


def _tail_module(
    traced: fx.GraphModule, nodes: list[fx.Node], pool: fx.Node, tail: set[fx.Node]
) -> fx.GraphModule:
    graph = fx.Graph()
    grid_node = pool.args[0]
    assert isinstance(grid_node, fx.Node)
    env: dict[fx.Node, fx.Node] = {grid_node: graph.placeholder("features")}
    variable = _input_dependent(nodes)
    for node in nodes:
        if node is pool or node in tail or node not in variable:  # the output is in the tail
            if node.op == "placeholder" or node is grid_node:
                continue
            env[node] = graph.node_copy(node, lambda n: env[n])
    module = fx.GraphModule(traced, graph, class_name="Tail")
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


def _no_pool_reason(nodes: list[fx.Node], modules: dict[str, nn.Module]) -> str:
    """Why a graph without a global average pool is not a GAP classifier."""
    for node in reversed(nodes):
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        pools = (
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool3d,
        )
        if isinstance(module, pools):
            size = module.output_size
            if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)) and _is_one(size):
                return "not a GAP model: it pools its grid by the maximum, not the mean"
            linear = next(
                (
                    modules[str(n.target)]
                    for n in nodes[nodes.index(node) :]
                    if n.op == "call_module" and isinstance(modules.get(str(n.target)), nn.Linear)
                ),
                None,
            )
            return (
                f"not a GAP model: its {module} keeps a {size} grid and its classifier reads "
                f"that grid flattened ({linear}), so there is no head to apply per cell"
            )
    return (
        "not a GAP model: no global average pooling (AdaptiveAvgPool2d(1), a mean over H "
        "and W, or a mean over tokens) between its features and its output"
    )
