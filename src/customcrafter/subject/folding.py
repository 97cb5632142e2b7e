"""Sampling with the subject module's LoRA folded into the base weights.

Dynamic Weighted Video Sampling changes the module's weight once or twice a video. Folded,
each adapted layer is a plain Linear whose weight is ``W0 + w * scaling * B A``: a step
costs what the base model's does, and a change of weight costs one pass over the adapted
weights (a fold). :class:`FoldedWeights` swaps folded copies in and out of the layers;
:class:`FoldedCopies`, kept by the module, holds them between videos."""

from __future__ import annotations

import torch
from torch import nn

from .module import ADAPTER, SpatialSubjectModule, owner

#: folded copies kept on the CPU: one for each weight of the paper's schedule
CPU_COPIES = 2


class FoldedCopies:
    """Folded copies of the adapted layers' weights, one set per module weight, kept by the
    module for its next video.

    A copy is used again only while it is what a fold would give now: the base weights and
    the LoRA matrices it was folded from must be the same tensors, unmodified (their storage
    and their in-place version counters are compared, so training, loading other weights or
    moving the model makes it stale).

    How many are kept: on a GPU one (a fold there is a pass over the adapted weights at
    memory speed, milliseconds, and memory is what is scarce: the memory plan counts one
    copy). On the CPU a fold is a memory-bound pass that costs 1-2 % of a short video (Wan
    2.1 1.3B: 0.15 s for its 180 layers on two cores), so once a weight is asked for again
    (the second video) it gets a copy of its own, up to one for each weight of the schedule,
    when the machine has room for it (twice its size free): every video after the second
    then folds nothing. A single video makes one copy, as on a GPU: new memory costs more
    than a fold on the CPU (first touches of its pages). ``folds`` counts the folds made."""

    def __init__(self):
        self.copies: dict[float, tuple[tuple, list[nn.Parameter]]] = {}  # last used last
        self.seen: set[float] = set()  # the weights folded before
        self.folds = 0

    def get(self, weight: float, layers: list[nn.Module], originals: list[torch.Tensor]):
        """The weights of ``layers`` with the LoRA folded in at ``weight``."""
        stamp = _stamp(layers, originals)
        kept = self.copies.pop(weight, None)
        if kept is not None and stamp is not None and kept[0] == stamp:
            self.copies[weight] = kept  # now the last used
            return kept[1]
        if kept is not None and _fits(kept[1], originals):
            buffers = kept[1]  # stale: folded again in place
        else:
            buffers = self._buffers(originals, again=weight in self.seen)
        _fold(weight, layers, originals, buffers)
        self.folds += 1
        self.seen.add(weight)
        self.copies[weight] = (stamp, buffers)
        return buffers

    def _buffers(self, originals: list[torch.Tensor], again: bool) -> list[nn.Parameter]:
        """Room for one more copy: a new one for a weight asked for ``again`` while the
        machine has room, else the least recently used one's."""
        for weight, (_, buffers) in list(self.copies.items()):
            if not _fits(buffers, originals):
                del self.copies[weight]  # the model changed: of no use
        if self.copies and (not again or len(self.copies) >= _capacity(originals)):
            oldest = next(iter(self.copies))
            return self.copies.pop(oldest)[1]
        return [nn.Parameter(torch.empty_like(w), requires_grad=False) for w in originals]


def _fits(buffers: list[torch.Tensor], originals: list[torch.Tensor]) -> bool:
    return all(
        (b.shape, b.dtype, b.device) == (w.shape, w.dtype, w.device)
        for b, w in zip(buffers, originals, strict=True)
    )


def _capacity(originals: list[torch.Tensor]) -> int:
    if originals[0].device.type != "cpu":
        return 1
    import psutil

    size = sum(w.numel() * w.element_size() for w in originals)
    return CPU_COPIES if psutil.virtual_memory().available > 2 * size else 1


def _stamp(layers: list[nn.Module], originals: list[torch.Tensor]) -> tuple | None:
    """What a folded copy was made from: each tensor's storage and in-place version
    (``None`` where a tensor keeps no version, as one made in inference mode: never reused)."""
    tensors = [
        t
        for layer, w0 in zip(layers, originals, strict=True)
        for t in (w0, layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)
    ]
    try:
        return tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:
        return None


@torch.no_grad()
def _fold(weight: float, layers, originals, buffers) -> None:
    for layer, w0, folded in zip(layers, originals, buffers, strict=True):
        scaling = layer.lora_alpha[ADAPTER] / layer.r[ADAPTER]
        a = layer.lora_A[ADAPTER].weight.float()
        b = layer.lora_B[ADAPTER].weight.float()
        if w0.dtype == torch.float32:
            torch.addmm(w0, b, a, alpha=weight * scaling, out=folded.data)
        else:  # summed in float32, then stored in the weights' dtype
            folded.data.copy_(torch.addmm(w0.float(), b, a, alpha=weight * scaling))


class FoldedWeights:
    """The LoRA folded into the targets' weights at one weight at a time.

    The base weights are never written: each target's plain Linear stands in its LoRA
    wrapper's place and takes a folded copy of its weight as its parameter while the module's
    weight is not 0, its own parameter back otherwise and on ``restore``. There is no copy of
    the originals to make or to write back, and a fold is one fused pass over a layer
    (``W0 + w * scaling * B A``) into a copy the module keeps (:class:`FoldedCopies`)."""

    def __init__(self, module: SpatialSubjectModule):
        self.layers = list(module.layers.values())
        self.originals = [layer.base_layer.weight for layer in self.layers]
        if module.fold_copies is None:
            module.fold_copies = FoldedCopies()
        self.copies = module.fold_copies
        for layer in self.layers:
            layer.enable_adapters(False)
        # while folded, each plain Linear stands in its LoRA wrapper's place: no wrapper
        # code runs per call, so sampling costs what the base model's does
        self.slots = _stand_in(module, lambda layer: layer.base_layer)
        self.weight = 0.0

    def set(self, weight: float) -> None:
        if weight == self.weight:
            return
        weights = (
            self.originals
            if weight == 0.0
            else self.copies.get(weight, self.layers, self.originals)
        )
        for layer, w in zip(self.layers, weights, strict=True):
            layer.base_layer.weight = w
        self.weight = weight

    def restore(self) -> None:
        for layer, w0 in zip(self.layers, self.originals, strict=True):
            layer.base_layer.weight = w0
            layer.enable_adapters(True)
        _put_back(self.slots)
        self.weight = 0.0


class FoldedAsRun:
    """The LoRA folded into each adapted layer's weight as the layer runs, where the weight
    cannot take a kept folded copy: float8 weights (a fold stored in float8 would lose the
    LoRA), blocks streamed in from host memory, model offload.

    Each adapted layer runs through :class:`_FoldAsRun`: a call computes with ``W + w *
    scaling * B A``, made from the weight as it is there (cast up to the input's dtype: the
    float8 weight is never written), when that moves fewer bytes than running the LoRA
    beside the layer (many tokens: a video's self-attention at the release's sizes), and
    runs the LoRA beside it (peft's unmerged layer) otherwise (few tokens)."""

    def __init__(self, module: SpatialSubjectModule):
        self.module = module
        self.slots = _stand_in(module, _FoldAsRun)
        self.wrappers = [wrapper for *_, wrapper in self.slots]
        self.weight = None
        self.set(0.0)

    @property
    def folds(self) -> int:
        """Calls that ran folded (the rest ran the LoRA beside the layer)."""
        return sum(wrapper.folds for wrapper in self.wrappers)

    def set(self, weight: float) -> None:
        if weight == self.weight:
            return
        self.module.set_scale(weight)
        for wrapper in self.wrappers:
            wrapper.strength = weight
        self.weight = weight

    def restore(self) -> None:
        _put_back(self.slots)
        self.module.set_scale(1.0)


def _stand_in(
    module: SpatialSubjectModule, make
) -> list[tuple[nn.Module, str, nn.Module, nn.Module]]:
    """Put ``make(layer)`` in each adapted layer's place in the model; ``(holder, name,
    layer, stand-in)`` for each, for ``_put_back``."""
    slots = []
    for target, layer in module.layers.items():
        root, relative = owner(module.model, target)
        parent, _, attr = relative.rpartition(".")
        holder = root.get_submodule(parent)
        slots.append((holder, attr, layer, make(layer)))
        setattr(holder, attr, slots[-1][3])
    return slots


def _put_back(slots) -> None:
    """Each adapted layer back in its place."""
    for holder, attr, layer, _ in slots:
        setattr(holder, attr, layer)


class _FoldAsRun(nn.Module):
    """One adapted layer (peft's LoRA Linear), folded per call where that is cheaper.

    Bytes a call moves beyond the base layer's: folding reads and writes the weight once
    (``2 in out``); the LoRA beside it reads the input and writes, scales and adds an output
    (``n (in + 5 out)`` for ``n`` tokens). So it folds from ``n >= 2 in out / (in + 5 out)``
    tokens: 512 for Wan 1.3B's 1536-wide layers, 1707 for 14B's 5120."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        base = layer.base_layer
        self.scaling = layer.lora_alpha[ADAPTER] / layer.r[ADAPTER]
        inputs, outputs = base.in_features, base.out_features
        self.fold_from = 2 * inputs * outputs / (inputs + 5 * outputs)
        self.strength = 0.0
        self.folds = 0

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        tokens = x.numel() // x.shape[-1]
        if self.strength == 0.0 or tokens < self.fold_from:
            return self.layer(x, *args, **kwargs)
        self.folds += 1
        base = self.layer.base_layer
        a = self.layer.lora_A[ADAPTER].weight.to(x.dtype)
        b = self.layer.lora_B[ADAPTER].weight.to(x.dtype)
        weight = torch.addmm(base.weight.to(x.dtype), b, a, alpha=self.strength * self.scaling)
        bias = None if base.bias is None else base.bias.to(x.dtype)
        return nn.functional.linear(x, weight, bias)
