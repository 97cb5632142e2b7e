"""The processes a job runs on: this one alone, or the ones ``accelerate launch`` or
``torchrun`` started, as accelerate sees them (``PartialState``).

accelerate joins launched processes into one group when they run on GPUs; on a machine
without one it does so only when told the processes run on the CPU (its ``cpu`` flag), and
would otherwise let each of them believe it is alone and do the whole job. This module is
the one place that asks, so every job (training, a prompt file, a benchmark, a probe)
splits its work the same way wherever it runs: over gloo on CPUs, over NCCL on GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

#: how long a process waits for the others at a meeting point: a benchmark's processes wait
#: while the slowest trains its subject modules (the launcher stops them all when one fails)
WAIT = timedelta(hours=24)

#: what tells accelerate (and torch.distributed) that a process is one of several
_GROUP_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                    "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # fmt: skip


def state():
    """accelerate's ``PartialState`` for this process (the first call joins the group)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.accelerator.is_available(), timeout=WAIT)


T = TypeVar("T")
R = TypeVar("R")


def spread(items: Sequence[T], work: Callable[[T], R]) -> list[R]:
    """``[work(item) for item in items]`` with the items split across the processes in equal
    shares (accelerate's ``split_between_processes``); every process gets every result, in
    the items' order (``gather_object``: keep them small)."""
    from accelerate.utils import gather_object

    group = state()
    with group.split_between_processes(list(enumerate(items))) as mine:
        done = [(index, work(item)) for index, item in mine]
    if group.num_processes > 1:
        done = gather_object(done)
    return [result for _, result in sorted(done, key=lambda pair: pair[0])]


def device(requested: str | None) -> str | None:
    """The device this process works on: ``requested`` (``None``: the default), but among
    several processes a bare ``cuda`` (or none) is this process's own GPU, not the first."""
    group = state()
    if group.num_processes > 1 and requested in (None, group.device.type):
        return str(group.device)
    return requested


@contextmanager
def alone() -> Iterator[None]:
    """Inside, this process is a job of its own on its own device: accelerate sees one
    process (no DDP, no meeting points), while the group it belongs to waits outside. A
    benchmark on N processes trains its subject modules this way, each on one process,
    each the module a run on one process trains."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    group = state()
    if group.num_processes == 1:
        yield
        return
    classes = (PartialState, AcceleratorState, GradientState)
    saved = [dict(cls._shared_state) for cls in classes]
    names = (*_GROUP_VARIABLES, "ACCELERATE_TORCH_DEVICE")
    environment = {name: os.environ.pop(name) for name in names if name in os.environ}
    os.environ["ACCELERATE_TORCH_DEVICE"] = str(group.device)
    for cls in classes:
        cls._shared_state.clear()
    try:
        yield
    finally:
        for cls, values in zip(classes, saved, strict=True):
            cls._shared_state.clear()
            cls._shared_state.update(values)
        os.environ.pop("ACCELERATE_TORCH_DEVICE", None)
        os.environ.update(environment)
