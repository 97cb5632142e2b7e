"""Bytes of live tensors over time, counted op by op (a ``TorchDispatchMode``).

Every tensor an op creates on the watched device is counted by its storage when it appears
and uncounted when the storage is freed (a weak reference to it: torch keeps one Python
object per storage while it lives). Views and in-place results share a storage and cost
nothing. Run over a step on the meta device this is an estimate of the step's memory that
needs no weights and no GPU; run over the same step on real tensors it measures what the
estimate models, which is how the estimate is checked.

Attention is counted as a fused kernel: ``scaled_dot_product_attention`` is routed to the
flash-attention op (its output and log-sum-exp kept for the backward pass, never the
``N x N`` matrix), which is what a GPU runs. On the meta device PyTorch would otherwise
choose the math path and count a matrix no GPU allocates. Matrix products are counted in
FLOPs too (``flops``), for the time estimates of the plan.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_aten = torch.ops.aten


class ByteCounter(TorchDispatchMode):
    """Live and peak bytes of the tensors on ``device`` (a device type: ``"meta"``,
    ``"cpu"``, ``"cuda"``), from those ``hold`` names and those ops create while it is on."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device
        self.live = 0
        self.peak = 0
        self.flops = 0
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        #: meta masks made by negating another (``~mask``): the complement of an assumed one
        self._negated: dict[int, weakref.ref] = {}

    # --- counting --------------------------------------------------------------------------
    def hold(self, *tensors) -> None:
        """Count tensors that exist already (weights, inputs) for as long as they live."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._count(t)

    def hold_module(self, module: torch.nn.Module) -> None:
        self.hold(*module.parameters(), *module.buffers())

    def _count(self, t: torch.Tensor) -> None:
        if t.device.type != self.device:
            return
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._refs and self._refs[key]() is storage:
            return
        size = storage.nbytes()
        self._sizes[key] = size
        self._refs[key] = weakref.ref(storage, lambda _, k=key: self._free(k))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _aten._local_scalar_dense.default and args[0].device.type == "meta":
            # a value read on the meta device (a mask's ``.all()``, a timestep picking an
            # expert): the common case, no padding, one in range
            return True if args[0].dtype == torch.bool else 1
        if func is _aten.index.Tensor and args[0].device.type == "meta":
            args = (args[0], [self._assumed_rows(i) for i in args[1]], *args[2:])
        out = func(*args, **(kwargs or {}))
        if func in _NEGATIONS and out.device.type == "meta" and out.dtype == torch.bool:
            key = id(out)
            self._negated[key] = weakref.ref(out, lambda _, k=key: self._negated.pop(k, None))
        self.flops += _flops(func, args, out)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t)
        return out

    def _assumed_rows(self, index):
        """A 1-D boolean mask on the meta device (no values to select by) as the rows the
        common case selects: every one (no padding), none for a negated mask (``x[~mask]``:
        the rest). A mask's two halves together are all the rows either way."""
        if not (isinstance(index, torch.Tensor) and index.device.type == "meta"):
            return index
        if index.dtype != torch.bool or index.ndim != 1:
            return index
        ref = self._negated.get(id(index))
        rows = 0 if ref is not None and ref() is index else index.shape[0]
        return torch.empty(rows, dtype=torch.long, device="meta")


_NEGATIONS = (_aten.bitwise_not.default, _aten.logical_not.default)


def _flops(func, args, out) -> int:
    """Multiply-add FLOPs of the matrix products and attention (the rest is noise)."""
    if func in (_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default):
        a, b = (args[0], args[1]) if func in (_aten.mm.default, _aten.bmm.default) else args[1:3]
        batch = a.shape[0] if a.ndim == 3 else 1
        return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
    if func is _aten._scaled_dot_product_flash_attention_for_cpu.default:
        q, k = args[0], args[1]
        return 4 * math.prod(q.shape[:-1]) * k.shape[-2] * q.shape[-1]
    if func is _aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
        q, k = args[1], args[2]
        return 8 * math.prod(q.shape[:-1]) * k.shape[-2] * q.shape[-1]
    if func is _aten.convolution.default:
        weight = args[1]
        return 2 * out.numel() * math.prod(weight.shape[1:])
    return 0


class FusedAttention:
    """While on: ``scaled_dot_product_attention`` as the flash-attention kernel (a mask or
    bias added as the memory-efficient kernel takes it); anything else as PyTorch runs it. The
    function itself is replaced, not intercepted by a mode: a checkpoint recomputes in the
    autograd engine's thread, where a mode entered here is not on."""

    def __enter__(self):
        self._original = F.scaled_dot_product_attention
        original = self._original

        def attention(*args, **kwargs):
            fused = _fused(*args, **kwargs)
            return original(*args, **kwargs) if fused is None else fused

        F.scaled_dot_product_attention = attention
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self._original


def _fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
           enable_gqa=False):  # fmt: skip
    """The flash-attention op's output, or ``None`` where it does not apply (dropout, grouped
    heads, a mask that trains)."""
    mask_trains = attn_mask is not None and attn_mask.requires_grad
    if dropout_p or enable_gqa or mask_trains or query.shape[-3] != key.shape[-3]:
        return None
    if attn_mask is not None and attn_mask.ndim not in (2, 4):  # broadcast as SDPA does
        attn_mask = attn_mask.expand(*query.shape[:-1], key.shape[-2])
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill(
            attn_mask.logical_not(), float("-inf")
        )
    out, _ = _aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, is_causal, attn_mask=attn_mask, scale=scale
    )
    return out


def counting(device: str) -> tuple[ByteCounter, FusedAttention]:
    """The two modes a counted step runs under (enter both, the attention one outside)."""
    return ByteCounter(device), FusedAttention()
