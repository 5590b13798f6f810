"""torch.distributed for the benchmark runner: set up from the environment, sum int64 states.

Under ``torch.distributed.run`` (env ``WORLD_SIZE`` > 1) :class:`distributed_context`
creates the process group (gloo on CPU, NCCL when CUDA is available) and tears it
down on exit; without a launcher it is a no-op with ``rank`` 0 and ``world_size`` 1.
:func:`all_reduce_sum` sums tensors in place across processes (a no-op in one process).

Example:
    >>> import torch
    >>> from dense_readout.evaluation.distributed import all_reduce_sum, distributed_context
    >>> with distributed_context() as ctx:  # no launcher: one process
    ...     counts = torch.tensor([3, 4])
    ...     all_reduce_sum([counts], torch.device("cpu"))
    >>> (ctx.rank, ctx.world_size), counts.tolist()
    ((0, 1), [3, 4])
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import InputError

__all__ = ["all_reduce_sum", "distributed_context", "raise_on_every_rank"]


class distributed_context:
    """Initialise torch.distributed from the environment when ``WORLD_SIZE`` > 1.

    gloo on CPU, NCCL when CUDA is available; tears the process group down on exit
    if it created it. ``rank``/``world_size`` are 0/1 without a launcher.

    Example:
        >>> from dense_readout.evaluation.distributed import distributed_context
        >>> with distributed_context() as context:  # no launcher: one process, nothing initialised
        ...     print(context.rank, context.world_size, context.created)
        0 1 False
    """

    def __init__(self) -> None:
        self.created = False
        self.rank, self.world_size = 0, 1

    def __enter__(self) -> distributed_context:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
            self.created = True
        if dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.created and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(tensors: list[Tensor], device: torch.device) -> None:
    """Sum each tensor in place over all processes (through ``device`` under NCCL).

    Example:
        >>> import torch
        >>> from dense_readout.evaluation.distributed import all_reduce_sum, distributed_context
        >>> counts = torch.tensor([3, 4])
        >>> with distributed_context():  # one process: the sum over processes is the tensor itself
        ...     all_reduce_sum([counts], torch.device("cpu"))
        >>> counts.tolist()
        [3, 4]
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for tensor in tensors:
        if tensor.numel() == 0:
            continue
        buffer = tensor.to(backend_device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        tensor.copy_(buffer.cpu())


def barrier() -> None:
    """Wait for every process (a no-op without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def raise_on_every_rank(message: str | None) -> None:
    """Send rank 0's refusal (or None) to every process and raise it everywhere.

    A resumable run checks its output folder on rank 0 only; without this the other
    ranks would wait in the next collective until the backend's timeout.

    Example:
        Outside a process group (or in one of size 1) it raises on this process only:

        >>> raise_on_every_rank(None)  # rank 0 found nothing to refuse
        >>> raise_on_every_rank("out/ holds a run of another model; pick a new --out")
        Traceback (most recent call last):
        ...
        dense_readout.errors.InputError: out/ holds a run of another model; pick a new --out
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message:
        raise InputError(message)
