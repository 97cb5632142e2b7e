"""Which layers the Spatial Subject Learning Module adapts.

A preset (``config.TARGET_PRESETS``) lists attention projections *relative to a spatial
transformer block*; the base model says where its spatial blocks are. Temporal
transformers, temporal convolutions and the initial temporal attention are never spatial
blocks, so no preset can reach them.
"""

from __future__ import annotations

from torch import nn

from ..config import TARGET_PRESETS
from ..errors import UserError
from ..models.base import BaseVideoModel


def resolve_targets(
    model: BaseVideoModel, preset: str = "spatial-qkv", override: list[str] | None = None
) -> list[str]:
    """Full module paths of the linear layers to adapt, in model order.

    ``override`` replaces the preset's list of block-relative projections
    (e.g. ``["attn1.to_q", "attn2.to_v"]``).
    """
    if override:
        suffixes = tuple(override)
    elif preset in TARGET_PRESETS:
        suffixes = TARGET_PRESETS[preset]
        if model.preset_names is not None:  # (one layer may serve two of the preset's)
            suffixes = tuple(dict.fromkeys(model.preset_names[s] for s in suffixes))
    else:
        raise UserError(
            f"unknown LoRA target preset {preset!r}; choose one of {', '.join(TARGET_PRESETS)}"
        )
    blocks = model.spatial_blocks()
    if not blocks:
        raise UserError(f"base model {model.name!r} has no spatial transformer blocks to adapt")
    modules = dict(model.unet.named_modules())
    targets = []
    for block in blocks:
        for suffix in suffixes:
            name = f"{block}.{suffix}"
            module = modules.get(name)
            if module is None:
                raise UserError(f"LoRA target {suffix!r} does not exist in block {block!r}")
            base = getattr(module, "base_layer", module)
            if not isinstance(base, nn.Linear):
                raise UserError(f"LoRA target {name!r} is a {type(base).__name__}, not a Linear")
            targets.append(name)
    return targets
