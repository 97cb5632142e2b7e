"""``--fsdp``: the denoiser's weights sharded across the processes while the subject trains.

torch's FSDP2 (``fully_shard``) makes each block of each denoiser a unit, then each denoiser
(its embeddings and head), and the text encoder when a learnt token trains through it: a
process keeps 1/N of every weight, frozen or LoRA, and gathers a unit's whole weights just
before it runs (again in the backward pass), dropping them after. Gradients are averaged
across the processes by the units themselves (no DDP), so a step still averages processes
x accumulation micro-batches and the run learns what one process learns.

What leaves the processes whole: the subject file and checkpoints are written from the
gathered weights (every process takes part, the main one writes) and the optimizer state
is saved whole, so a checkpoint goes on with or without ``--fsdp`` on any number of
processes (of the same processes x accumulation).

Why torch's ``fully_shard`` and not accelerate's FSDP plugin: the plugin turns on only on
GPUs (it could not be tested on the machines this project is built on), and it shards the
module it is given as one piece, where the units here follow the blocks the rest of the
project already knows (``offloadable_blocks``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import UserError


def shard(model, trains_text_encoder: bool) -> list[nn.Module]:
    """Shard ``model``'s denoisers (and with ``trains_text_encoder`` its text encoder)
    across the processes, moving each process's shards to its device; return the units,
    children first."""
    from torch.distributed.fsdp import fully_shard

    if len(model.experts()) > 1 and _both_adapted(model):
        raise UserError(
            "--fsdp on a two-expert model trains one expert at a time (each step runs one, "
            "drawn per micro-batch, and every process must gather the same): add --experts "
            "high or --experts low"
        )
    units: list[nn.Module] = []
    for blocks in model.offloadable_blocks():
        for block in blocks:
            fully_shard(block)
            units.append(block)
    for expert in model.experts().values():
        fully_shard(expert)
        units.append(expert)
    if trains_text_encoder:
        fully_shard(model.text_encoder)
        units.append(model.text_encoder)
    return units


def _both_adapted(model) -> bool:
    return all(any(hasattr(m, "lora_A") for m in e.modules()) for e in model.experts().values())


def gradient_sync(units: list[nn.Module], on: bool) -> None:
    """Whether the next backward pass averages the gradients across the processes (off
    for all but a step's last micro-batch: they add up locally first)."""
    for unit in units:
        unit.set_requires_gradient_sync(on, recurse=False)


@contextmanager
def whole(units: list[nn.Module]) -> Iterator[None]:
    """Inside, every unit holds its whole weights (gathered on every process: all of them
    must enter), so the subject module reads and saves as unsharded."""
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()


class WholeOptimizer:
    """The optimizer's state gathered whole (on every process: all must build it), in the
    format an unsharded run saves and loads."""

    def __init__(self, optimizer):
        state = optimizer.state_dict()
        state["state"] = {
            index: {key: _whole(value) for key, value in values.items()}
            for index, values in state["state"].items()
        }
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def _whole(value):
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def sharded_state(optimizer, state: dict) -> dict:
    """``state`` (an optimizer state saved whole) with each tensor of a sharded parameter
    sharded like it, ready for ``optimizer.load_state_dict``."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = dict(state)
    out["state"] = {}
    for index, values in state["state"].items():
        param = params[int(index)]
        out["state"][index] = {
            key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
            if isinstance(param, DTensor)
            and isinstance(value, torch.Tensor)
            and value.shape == param.shape
            else value
            for key, value in values.items()
        }
    return out
