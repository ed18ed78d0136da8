"""Training under torchrun: which process does what, and the few messages they exchange.

torchrun starts one process per GPU (or several on the CPU) and tells each its place through
the environment (RANK, WORLD_SIZE, LOCAL_RANK). The processes share a run in one of two ways:

- `data`: every process trains the same fold with DistributedDataParallel. Each global batch is
  the one a single process would draw, cut into one piece per process, so the recipe (batch
  size, sample order, learning-rate schedule) stays that of a single-process run; BatchNorm
  is synchronised on GPUs; scoring is shared out and gathered.
- `folds`: fold k is trained by process (k - 1) % world_size on its own, with no gradient sync,
  and handed to rank 0.

Only rank 0 writes files and prints; the others send it what they made and never touch the
bundle. Every exchange has a timeout, so a process that dies or hangs cannot keep the others
waiting for ever (torchrun also stops the other processes as soon as one fails).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ml.config import DISTRIBUTED_MODES, DISTRIBUTED_TIMEOUT_MIN
from ml.errors import UserError
from ml.runtime import pick_device

T = TypeVar("T")
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class StoppedByRankZero(Exception):
    """Raised on the other processes when rank 0 refused or failed a step; rank 0 says why."""


@dataclass(frozen=True)
class Place:
    """Where torchrun put this process."""

    rank: int
    world_size: int
    local_rank: int


def place_from_env(environ: Mapping[str, str] = os.environ) -> Place | None:
    """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; None when this process was not started so."""
    if not all(key in environ for key in ENVIRONMENT):
        return None
    try:
        rank, world_size, local_rank = (int(environ[key]) for key in ENVIRONMENT)
    except ValueError:
        raise UserError(f"{', '.join(ENVIRONMENT)} must be whole numbers") from None
    if not 0 <= rank < world_size or local_rank < 0:
        raise UserError(f"RANK={rank} does not fit WORLD_SIZE={world_size}")
    return Place(rank, world_size, local_rank)


def is_main_process() -> bool:
    """True outside torchrun and for rank 0: the one process that writes and prints."""
    place = place_from_env()
    return place is None or place.rank == 0


class Team:
    """This process's place among the training processes and what they exchange.

    A single process is a team of one: every exchange then returns at once, and training runs
    exactly as it did before torchrun support existed.
    """

    def __init__(self, device: torch.device, mode: str = "single", place: Place | None = None):
        self.device, self.mode = device, mode
        self.rank = place.rank if place else 0
        self.world_size = place.world_size if place else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def description(self) -> str:
        if self.world_size == 1:
            return str(self.device)
        return f"{self.world_size} processes ({self.mode} mode, rank 0 on {self.device})"

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` on rank 0 alone (checks, writing); every process returns its small, picklable
        value, or stops when it failed: a refusal on rank 0 must not leave the others waiting."""
        if self.world_size == 1:
            return fn(*args, **kwargs)
        return self._agree(*self._on_rank_zero(fn, args, kwargs))

    def main_first(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` on rank 0, then on the others (rank 0 fills a cache that the others then read).
        Each process keeps its own value; an error on rank 0 is raised everywhere."""
        if self.world_size == 1:
            return fn(*args, **kwargs)
        value, error = self._on_rank_zero(fn, args, kwargs)
        self._agree(None, error)
        return value if self.is_main else fn(*args, **kwargs)

    def _on_rank_zero(
        self, fn: Callable[..., T], args: tuple, kwargs: dict[str, Any]
    ) -> tuple[T | None, Exception | None]:
        """(value, None) or (None, error) of `fn` on rank 0; (None, None) elsewhere."""
        if not self.is_main:
            return None, None
        try:
            return fn(*args, **kwargs), None
        except Exception as exc:
            return None, exc

    def _agree(self, value: T, error: Exception | None) -> T:
        """Rank 0's value on every process, or its error: raised as it is on rank 0 and as
        `StoppedByRankZero` on the others."""
        said = f"{type(error).__name__}: {error}" if error is not None else None
        shared, said = self.broadcast((value, said))
        if error is not None:
            raise error
        if said is not None:
            raise StoppedByRankZero(f"rank 0 stopped the run ({said})")
        return shared

    def broadcast(self, value: T) -> T:
        """Rank 0's value, on every process."""
        if self.world_size == 1:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def hand_over(self, value: Any) -> None:
        """Send `value` to rank 0, which takes it with `take_from`."""
        dist.send_object_list([value], dst=0)

    def take_from(self, rank: int) -> Any:
        """On rank 0: what process `rank` handed over (waiting for it)."""
        box: list[Any] = [None]
        dist.recv_object_list(box, src=rank)
        return box[0]

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's value, in rank order, on every process."""
        if self.world_size == 1:
            return [value]
        box: list[Any] = [None] * self.world_size
        dist.all_gather_object(box, value)
        return box

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the processes."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)  # on the CPU: every group here has a CPU (gloo) backend
        return total.tolist()

    def data_parallel(self, model: nn.Module) -> nn.Module:
        """`model` wrapped to average gradients over the processes (a no-op in a team of one).

        Only the parameters that require gradients when it is wrapped take part, so the
        wrapper is made again whenever the trainable set changes (the backbone's unfreezing).
        """
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every process, so that they all
        score with the same model after an epoch in which each normalised its own piece."""
        if self.world_size == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


@contextlib.contextmanager
def join(
    mode: str | None, device_name: str, timeout_min: float = DISTRIBUTED_TIMEOUT_MIN
) -> Iterator[Team]:
    """The team this process belongs to, for the length of a run.

    Outside torchrun (or with one process) that is a team of one on `device_name`. Under
    torchrun the process group is set up here (NCCL for CUDA tensors and gloo for the small
    CPU messages on GPUs, gloo alone on the CPU), each process on cuda:LOCAL_RANK when CUDA is
    used, and torn down on the way out, error or not.
    """
    place = place_from_env()
    if mode is not None and mode not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed={mode!r} is not one of {', '.join(DISTRIBUTED_MODES)}")
    if place is None and mode is not None:
        raise UserError(
            f"--distributed {mode} needs several processes started by torchrun "
            f"({', '.join(ENVIRONMENT)} are not set); see README, 'Training on several GPUs'"
        )
    if place is None or place.world_size == 1:
        yield Team(pick_device(device_name))
        return
    device = _local_device(device_name, place)
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=place.rank, world_size=place.world_size, timeout=_minutes(timeout_min)
    )
    try:
        with _quiet_unless_main(place.rank):
            yield Team(device, mode or "data", place)
    finally:
        dist.destroy_process_group()


def _local_device(device_name: str, place: Place) -> torch.device:
    device = pick_device(device_name)
    if device.type != "cuda":
        return device
    visible = torch.cuda.device_count()
    if place.local_rank >= visible:
        raise UserError(
            f"LOCAL_RANK {place.local_rank} needs GPU {place.local_rank}, but this machine shows "
            f"{visible}; start torchrun with --nproc-per-node {visible} or fewer"
        )
    device = torch.device("cuda", place.local_rank)
    torch.cuda.set_device(device)
    return device


def _minutes(value: float) -> timedelta:
    if value <= 0:
        raise ValueError(f"the distributed timeout must be positive, not {value} minutes")
    return timedelta(minutes=value)


@contextlib.contextmanager
def _quiet_unless_main(rank: int) -> Iterator[None]:
    """Progress lines come from rank 0 alone; errors (stderr) still come from every process."""
    if rank == 0:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
