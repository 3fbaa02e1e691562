"""Data-parallel training over several processes or machines: PyTorch DDP as launched by ``torchrun``.

``torchrun`` starts one process per device and tells each one its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, plus ``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous).
:func:`from_env` reads that place; :meth:`DistSession.start` joins the process group (gloo on the
CPU, NCCL on CUDA) and :meth:`DistSession.wrap` puts the model in ``DistributedDataParallel``, which
averages the gradients of all ranks in every backward pass. A plain run (no torchrun) gets a
single-process session whose methods do nothing, so the trainer has one code path.

Importing this module does not import torch.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Mapping, Optional

if TYPE_CHECKING:
    import torch

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: global rank, 0 .. world_size - 1 (rank 0 writes checkpoints and logs).
        world_size: number of processes in the run (1: not distributed).
        local_rank: rank on this machine (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def from_env(environ: Optional[Mapping[str, str]] = None) -> DistInfo:
    """The torchrun placement of this process, or a single process when ``WORLD_SIZE`` is not set.

    Raises:
        ValueError: the variables are set but not usable (one line naming the variable).
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return DistInfo()
    values = {}
    for name in _ENV:
        text = env.get(name, "0")
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r}: not an integer (torchrun sets it)") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: not a valid placement "
                         "(need 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0)")
    return DistInfo(rank, world, local)


def rank_seed(seed: int, rank: int) -> int:
    """The data-stream seed of ``rank``: ``seed`` itself on rank 0 (a one-process run draws the same
    patches as rank 0), a distinct seed derived from (seed, rank) elsewhere, so ranks see different patches."""
    if rank == 0:
        return int(seed)
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint32)[0])


class DistSession:
    """The process group of one training run (or a stand-in for a single process).

    Use :meth:`start`, then :meth:`wrap` the model, and :meth:`close` at the end; a group that was
    already initialised by the caller is used and left open.
    """

    def __init__(self, info: DistInfo, device: "torch.device", owns_group: bool = False) -> None:
        self.info = info
        self.device = device
        self._owns_group = owns_group

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @property
    def active(self) -> bool:
        return self.info.active

    @classmethod
    def start(cls, device: "torch.device") -> "DistSession":
        """Join the process group torchrun set up (or the caller's), or a single-process session.

        On CUDA each process of a distributed run takes ``cuda:LOCAL_RANK``.
        """
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            info = DistInfo(dist.get_rank(), dist.get_world_size(), from_env().local_rank)
            return cls(info, _rank_device(device, info), owns_group=False)
        info = from_env()
        if not info.active:
            return cls(info, device)
        if not dist.is_available():
            raise RuntimeError("this torch build has no torch.distributed; cannot train on several processes")
        device = _rank_device(device, info)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
        return cls(info, device, owns_group=True)

    def wrap(self, model: "torch.nn.Module") -> "torch.nn.Module":
        """``model`` in DistributedDataParallel (rank 0's weights are broadcast to all ranks here);
        the model itself when not distributed. Keep the unwrapped model for saving."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def any_true(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank: ranks stop at the same step, or the
        ones still stepping would wait for the others' gradients for ever."""
        if not self.active:
            return bool(flag)
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean_metrics(self, metrics: Dict[str, float]) -> Dict[str, float]:
        """The mean of each metric over the ranks (the loss of the global batch as logged by rank 0)."""
        if not self.active:
            return metrics
        import torch
        import torch.distributed as dist

        keys = list(metrics)  # the same order on every rank (same code)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        t /= self.info.world_size
        return dict(zip(keys, t.tolist(), strict=True))

    def close(self) -> None:
        """Leave the process group if this session joined it."""
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                try:  # leave together: rank 0 hosts the rendezvous store, and a rank still tearing down
                    dist.barrier()  # its group when rank 0 exits can abort ("terminate called ...")
                except RuntimeError as exc:  # a peer is gone: leave anyway
                    log.warning("process group barrier before leaving failed: %s", exc)
                dist.destroy_process_group()
            self._owns_group = False


def _rank_device(device: "torch.device", info: DistInfo) -> "torch.device":
    """CUDA: ``cuda:LOCAL_RANK`` whatever index was asked for (NCCL needs one device per process)."""
    import torch

    if device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


__all__ = ["DistInfo", "DistSession", "from_env", "rank_seed"]
