"""torch.distributed plumbing: process-group set-up under torchrun and small collectives.

polab uses torch.distributed as it is (gloo on CPU, NCCL on GPU); nothing
here is a cluster framework of its own. Without ``torchrun`` (no
``WORLD_SIZE`` in the environment) everything runs as a single process and
the collectives are identities.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "all_gather_objects", "all_reduce_sum", "available_cores", "barrier", "decode_threads", "decoder_layers",
           "fsdp_shard", "machine_oversubscribed", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the default process group if launched by torchrun.

    ``device="auto"`` picks ``cuda:LOCAL_RANK`` when CUDA is available and
    the CPU otherwise; the backend follows (NCCL on CUDA, gloo on CPU).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but CUDA is not available; use --device cpu.")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = None
    if world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def all_gather_objects(obj, info: DistInfo) -> list:
    """Gather one picklable object per rank, in rank order (``[obj]`` without distribution)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a short list of floats over ranks (float64)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.cpu().tolist()


def decoder_layers(model: torch.nn.Module):
    """The decoder layers of a Hugging Face causal LM (``model.model.layers``) or of a module wrapping one as
    ``.lm`` (:class:`polab.scaled.models.ValueModel`); None when there are none."""
    for holder in (model, getattr(model, "lm", None)):
        layers = getattr(getattr(holder, "model", None), "layers", None)
        if layers is not None:
            return layers
    return None


def fsdp_shard(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Shard a Hugging Face causal LM (or a module wrapping one as ``.lm``, as the critic does) with FSDP2
    (``torch.distributed.fsdp.fully_shard``) over all ranks, in place.

    Each decoder layer (:func:`decoder_layers`) is its own unit (its parameters are gathered for its
    forward and backward only); the root unit holds the rest (embeddings, final norm, the tied
    vocabulary projection, which must stay with the embedding it shares, and a critic's value head).
    Gradients are reduce-scattered and averaged over ranks, as DDP averages them. Parameters become
    DTensors sharded on dimension 0. Frozen modules (the reference model) are sharded the same way and
    only all-gather their weights in the forward.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not info.enabled:
        raise ValueError("FSDP needs a process group: launch with torchrun (--nproc_per_node >= 2), or use --parallel ddp.")
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    layers = decoder_layers(model)
    for layer in layers if layers is not None else []:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


# -- CPU threads on a shared machine ------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask (``os.sched_getaffinity``), capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def machine_oversubscribed(cores: int | None = None) -> bool:
    """True when the 1-minute load average exceeds the cores available to this process by more than half a core.

    The load average counts every runnable task of the machine (this process's own threads included), so a
    quiet machine on which this process alone computes with all its cores reads about ``cores``.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    return load > (available_cores() if cores is None else cores) + 0.5


@contextlib.contextmanager
def decode_threads(device: torch.device | str, threads: int = -1):
    """Torch's intra-op thread count for a token-by-token decode loop on the CPU (restored afterwards).

    ``threads``: ``> 0`` that many; ``0`` leave it; ``-1`` (auto) one thread when the machine is
    oversubscribed (:func:`machine_oversubscribed`), else leave it.

    Why: a decode step is hundreds of small operations, each an OpenMP parallel region that ends in a
    barrier. When other processes hold the cores, one of this process's threads is often descheduled
    and the others spin (OpenMP's default active wait) until it runs again, so every small operation
    costs up to a scheduler time slice, and the spinning takes CPU from everyone. Measured here (2 cores,
    load average 17-18 from other processes, SmolLM2-135M, 8 prompts x 4 samples, 8 new tokens):
    polab's sampler took 141 s with 2 threads and 31 s with one thread (33 s with 2 threads and
    ``OMP_WAIT_POLICY=PASSIVE``); transformers' ``generate``, whose time goes more into large matrix
    products, 220 s and 93 s. One thread has no barrier to wait at. The logits of SmolLM2-135M
    were bitwise equal with 1 and 2 threads on this machine's CPU (oneDNN/MKL split these products
    over output columns), so the choice did not change the sampled tokens here; that is a property of
    the BLAS, not a guarantee.
    """
    dev = torch.device(device)
    if dev.type != "cpu" or threads == 0:
        yield
        return
    n = threads if threads > 0 else (1 if machine_oversubscribed() else 0)
    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
