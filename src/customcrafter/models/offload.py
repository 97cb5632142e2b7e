"""Blocks of a denoiser whose frozen weights live in host memory and are streamed in.

``--offload-blocks N``: the frozen weights of ``N`` of the denoiser's blocks are kept in
(pinned) CPU memory. Just before such a block runs, its weights are copied to the GPU; the
copy of the block that runs next is started at the same time on a side stream, so that it
overlaps the computation. At most two offloaded blocks are on the GPU at once. The trained
weights (a subject module's LoRA) stay on the GPU: the optimizer updates them there.

Why not diffusers' group offloading or accelerate's hooks, which do this for inference: both
fire on the module call and put the weights back as soon as the forward pass of a block
ends. In training the backward pass needs the weights again (``grad_input = grad_output @
W``), and with gradient checkpointing the block is recomputed in the backward pass, when
they have long been put back; neither knows the backward pass runs the blocks in reverse
order, nor offloads only some blocks. Here the onload is part of the block's ``forward`` (so
a checkpoint's recomputation onloads it again), a block is put back only when another
offloaded block needs the room, and the next block is the one after it in the forward pass
and the one before it in the backward pass. Training needs gradient checkpointing: without
it autograd would keep references to the weights of every block.

While a block's weights are away, its parameters hold a placeholder of the right shape and
dtype that takes no memory (one NaN value, expanded): a block that ran without its weights
would give NaN, never a silent wrong number.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BlockOffload:
    """The frozen weights of ``blocks`` (each list one denoiser's blocks in the order they
    run) kept on ``host`` and onloaded to ``device`` as each block runs."""

    def __init__(
        self,
        groups: Sequence[Sequence[nn.Module]],
        device: torch.device | str,
        host: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.host = torch.device(host)
        self._groups = [list(g) for g in groups if g]
        #: block -> (group, index), for the log
        self._where = {b: (gi, bi) for gi, g in enumerate(self._groups) for bi, b in enumerate(g)}
        self._stored: dict[nn.Module, list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]] = {}
        self._resident: dict[nn.Module, torch.cuda.Event | None] = {}
        cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        #: ``("load", group, index, prefetched)`` / ``("drop", group, index)`` in order (for
        #: tests and ``--verbose``); cleared by ``clear_log``
        self.log: list[tuple] = []
        for gi, blocks in enumerate(self._groups):
            for bi, block in enumerate(blocks):
                self._install(block, gi, bi, pin=cuda)

    # --- setup ------------------------------------------------------------------------------
    def _install(self, block: nn.Module, group: int, index: int, pin: bool) -> None:
        entries = []
        for param in block.parameters():
            if param.requires_grad:
                continue  # trained here: the optimizer's, stays on the device
            stored = param.data.to(self.host)
            if pin:
                stored = stored.pin_memory()
            placeholder = _placeholder(param.data, self.device)
            param.data = placeholder
            entries.append((param, stored, placeholder))
        self._stored[block] = entries
        forward = getattr(block.forward, "__wrapped__", None)
        inner = block.forward if forward is None else forward

        def onloading(*args, **kwargs):
            self._enter(group, index)
            return inner(*args, **kwargs)

        if forward is None:
            block.forward = onloading
        else:  # already checkpointed: the onload goes inside, so that recomputing onloads
            from .base import _checkpointed

            block.forward = _checkpointed(onloading)

    @property
    def blocks(self) -> list[nn.Module]:
        return [b for g in self._groups for b in g]

    def bytes_offloaded(self) -> int:
        return sum(s.numel() * s.element_size() for e in self._stored.values() for _, s, _ in e)

    # --- running ----------------------------------------------------------------------------
    def _enter(self, group: int, index: int) -> None:
        blocks = self._groups[group]
        block = blocks[index]
        step = -1 if torch._C._current_graph_task_id() != -1 else 1  # backward: reverse order
        following = blocks[(index + step) % len(blocks)]
        keep = {block, following}
        for other in [b for b in self._resident if b not in keep]:
            self._drop(other)
        if block not in self._resident:
            self._load(block, prefetch=False)
        self._wait(block)
        if following not in self._resident:
            self._load(following, prefetch=True)

    def _load(self, block: nn.Module, prefetch: bool) -> None:
        stream = self._stream if prefetch else None
        event = None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                self._copy_in(block)
                event = torch.cuda.Event()
                event.record(stream)
        else:
            self._copy_in(block)
        self._resident[block] = event
        self.log.append(("load", *self._where[block], prefetch))

    def _copy_in(self, block: nn.Module) -> None:
        for param, stored, _ in self._stored[block]:
            onloaded = torch.empty_like(stored, device=self.device)
            param.data = onloaded.copy_(stored, non_blocking=True)

    def _wait(self, block: nn.Module) -> None:
        event = self._resident[block]
        if event is None:
            return
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)
        for param, _, _ in self._stored[block]:
            param.data.record_stream(current)  # freed only after the compute that reads it
        self._resident[block] = None

    def _drop(self, block: nn.Module) -> None:
        for param, _, placeholder in self._stored[block]:
            param.data = placeholder
        del self._resident[block]
        self.log.append(("drop", *self._where[block]))

    def release(self) -> None:
        """Put every onloaded block back (after a generation, before the VAE decodes)."""
        for block in list(self._resident):
            self._drop(block)


def _placeholder(like: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor shaped and typed like ``like`` on ``device`` that holds one NaN."""
    one = torch.full((), float("nan"), dtype=torch.float32, device=device).to(like.dtype)
    return one.expand(like.shape)


def choose_blocks(blocks: Sequence[nn.Module], count: int) -> list[nn.Module]:
    """The ``count`` blocks of one denoiser that are offloaded: the last ones, so that the
    backward pass starts with a block the forward pass left on the device."""
    if count <= 0:
        return []
    return list(blocks)[-count:]
