"""The processes a job runs on: this one alone, or the ones ``accelerate launch`` or
``torchrun`` started, as accelerate sees them (``PartialState``).

accelerate joins launched processes into one group when they run on GPUs; on a machine
without one it does so only when told the processes run on the CPU (its ``cpu`` flag), and
would otherwise let each of them believe it is alone and do the whole job. This module is
the one place that asks, so every job (training, a prompt file, a benchmark, a probe)
splits its work the same way wherever it runs: over gloo on CPUs, over NCCL on GPUs.
"""

from __future__ import annotations


def state():
    """accelerate's ``PartialState`` for this process (the first call joins the group)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.accelerator.is_available())
