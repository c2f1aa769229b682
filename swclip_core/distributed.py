"""Several processes under torchrun: who this process is, and the few collectives training and
prediction need.

torchrun (``torchrun --nproc-per-node N -m swclip_core.cli ...``) starts one process per device
and tells each its place in environment variables: ``RANK`` (0..WORLD_SIZE-1 over all nodes),
``WORLD_SIZE`` and ``LOCAL_RANK`` (its device on this node). The process group is joined
(:func:`start`) only when ``WORLD_SIZE`` > 1, over nccl on GPUs and gloo on CPUs; a single
process never creates one, and every helper here is then a no-op returning its input, so one
process runs exactly the code it ran before torchrun was supported.

torch is imported inside the functions: reading the rank must stay cheap for the modules that
never touch a tensor (the run lock, the run folder).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


# Set by :func:`alone`: this process works as if it were the only one.
_alone: ContextVar[bool] = ContextVar("swclip_alone", default=False)


def world_size() -> int:
    """How many processes work on this command (1 outside torchrun, or :func:`alone`)."""
    return 1 if _alone.get() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's place among them, 0..world_size()-1 (0 outside torchrun)."""
    return 0 if _alone.get() else int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Run the enclosed code as one process would, without the others (no collective): for work
    that one process does for all, e.g. a model trained on rank 0 alone inside a command
    (:func:`main_first`) while the others wait."""
    token = _alone.set(True)
    try:
        yield
    finally:
        _alone.reset(token)


def local_rank() -> int:
    """This process's place on its own node: the GPU it drives."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True for the one process that writes the outputs (rank 0; always true alone)."""
    return rank() == 0


def restarted() -> bool:
    """True when torchrun restarted this process group after a worker died
    (``--max-restarts``): the run continues from its last checkpoint."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return restarts > 0 and not _alone.get()


def active() -> bool:
    """True when the process group is up (several processes, :func:`start` called)."""
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def backend_for(device: torch.device) -> str:
    """nccl between GPUs, gloo between CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def start(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (once; nothing alone) and return this process's
    device: ``cuda:LOCAL_RANK`` when ``device`` is a GPU without an index, else ``device``."""
    if world_size() <= 1:
        return device
    import torch
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        store = _attempt_store()
        if store is None:  # MASTER_ADDR/MASTER_PORT from the environment
            dist.init_process_group(backend_for(device))
        else:
            dist.init_process_group(
                backend_for(device), store=store, rank=rank(), world_size=world_size()
            )
    return device


def _attempt_store() -> Any:
    """torchrun's own key-value store, its keys prefixed by the restart count; None outside an
    elastic agent. A group restarted after a worker died (``--max-restarts``) may meet the
    previous attempt's keys there: gloo would then connect to the dead worker's address
    ("connectFullMesh failed ... Connection refused"), which this prefix rules out."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from datetime import timedelta

    import torch.distributed as dist

    agent_store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size(),
        is_master=False,
        timeout=timedelta(minutes=30),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"swclip/attempt_{attempt}", agent_store)


def stop() -> None:
    """Leave the process group (at the end of a command), if one was joined."""
    if active():
        import torch.distributed as dist

        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (nothing alone)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def main_first(make: Callable[[], Any]) -> Any:
    """``make()`` on rank 0 first, then on the others: for work that fills a cache on disk
    (gallery embeddings, their index) which the others then read instead of writing it too."""
    if not active():
        return make()
    if not is_main():
        barrier()  # until rank 0 has made it
        return make()
    made = make()  # if this fails, torchrun stops the waiting processes when this one exits
    barrier()
    return made


def shares(count: int, parts: int | None = None) -> list[slice]:
    """``count`` rows cut into ``parts`` (default: the world size) contiguous slices, in rank
    order, sizes differing by at most one; the first ones are the larger."""
    parts = world_size() if parts is None else parts
    base, extra = divmod(count, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + base + (part < extra))
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def local_share(rows: np.ndarray | Sequence[Any]) -> Any:
    """This process's contiguous share of ``rows`` (all of them alone): concatenating every
    rank's share in rank order gives ``rows`` back."""
    if world_size() <= 1:
        return rows
    return rows[shares(len(rows))[rank()]]


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Every process's ``local`` rows concatenated in rank order (``total`` rows, cut as
    :func:`shares` cuts them), differentiable; ``local`` itself alone.

    Gradients: every process computes the same loss from the gathered rows, so each one's
    backward holds that loss's full gradient for its own rows. The backward hands a process
    ``world_size`` times the gradient of its own rows, so that averaging the parameters'
    gradients over processes (:func:`average_gradients`) gives exactly one process's gradient:
    the encoders' (used through the rows) as the sum of every share's, and the parameters the
    loss uses directly (the temperature) once. That is what an all-gather whose backward
    reduce-scatters computes, without a collective in the backward pass.
    """
    if not active():
        return local
    return _gather_rows_function().apply(local, total)


@functools.cache
def _gather_rows_function() -> type:
    """The autograd function of :func:`gather_rows` (built on first use: torch loads late)."""
    import torch
    import torch.distributed as dist

    class GatherRows(torch.autograd.Function):
        @staticmethod
        def forward(ctx, local: torch.Tensor, total: int) -> torch.Tensor:
            cuts = shares(total)
            width = max(cut.stop - cut.start for cut in cuts)
            mine = cuts[rank()]
            if local.shape[0] != mine.stop - mine.start:
                raise ValueError(f"rank {rank()} holds {local.shape[0]} rows, not its share")
            # all_gather needs one size everywhere: pad to the largest share.
            padded = local.new_zeros((width, *local.shape[1:]))
            padded[: local.shape[0]] = local
            parts = [torch.empty_like(padded) for _ in cuts]
            dist.all_gather(parts, padded.contiguous())
            ctx.mine = mine
            ctx.world = len(cuts)
            return torch.cat(
                [part[: cut.stop - cut.start] for part, cut in zip(parts, cuts, strict=True)]
            )

        @staticmethod
        def backward(ctx, grad: torch.Tensor):
            return grad[ctx.mine] * ctx.world, None

    return GatherRows


def average_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over the processes, in one all-reduce.

    A parameter without a gradient on some process (its share was empty) counts as zero there;
    one without a gradient on every process keeps none, as it would in one process (so AdamW
    leaves it alone rather than decaying it)."""
    if not active():
        return
    import torch
    import torch.distributed as dist

    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    device = params[0].device
    flat = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params
    ]
    # A trailing count per parameter: on how many processes it had a gradient.
    had = torch.tensor([float(p.grad is not None) for p in params], device=device)
    buffer = torch.cat([*flat, had])
    dist.all_reduce(buffer)
    buffer /= world_size()
    counts = buffer[-len(params) :]
    offset = 0
    for param, count in zip(params, counts.tolist(), strict=True):
        size = param.numel()
        if count > 0:
            mean = buffer[offset : offset + size].view_as(param).to(param.dtype)
            if param.grad is None:
                param.grad = mean.clone()
            else:
                param.grad.copy_(mean)
        offset += size


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Give every process rank 0's trainable weights (they start the same by seeding; this
    makes sure of it, as DistributedDataParallel does)."""
    if not active():
        return
    import torch.distributed as dist

    for param in module.parameters():
        if param.requires_grad:
            dist.broadcast(param.data, src=0)


def gather_objects(value: Any) -> list[Any] | None:
    """Every process's ``value`` in rank order on rank 0 (None on the others); ``[value]``
    alone. Values are pickled: for tables of predictions, not tensors of a training step."""
    if not active():
        return [value]
    import torch.distributed as dist

    received: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(value, received, dst=0)
    return received


def all_objects(value: Any) -> list[Any]:
    """Every process's ``value`` in rank order, on every process; ``[value]`` alone."""
    if not active():
        return [value]
    import torch.distributed as dist

    received: list[Any] = [None] * world_size()
    dist.all_gather_object(received, value)
    return received


PROCESS_FIELDS = ("world_size", "backend", "rank_devices")  # the keys of run_settings


def run_settings(device: torch.device) -> dict[str, Any]:
    """What a run records about its processes: their number, backend and devices (config.json
    and metrics.jsonl)."""
    if not active():
        return {"world_size": 1, "backend": None, "rank_devices": str(device)}
    import torch.distributed as dist

    return {
        "world_size": world_size(),
        "backend": dist.get_backend(),
        "rank_devices": ",".join(all_objects(str(device))),
    }
