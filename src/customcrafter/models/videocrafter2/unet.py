"""The VideoCrafter2 3D UNet, written to load the original checkpoint unchanged.

Module paths follow the original ``openaimodel3d.UNetModel`` so that the checkpoint's
``model.diffusion_model.*`` tensors load with ``strict=True`` (the misspelt ``temopral_conv``
included). Only the settings VideoCrafter2 uses are implemented: linear projections in the
spatial and temporal transformers, no relative positions and no causal mask in the temporal
attention (which may also cross-attend to the text, VideoCrafter's ``temporal_selfatt_only:
false``), temporal convolutions in every ResBlock, the extra temporal attention after the
first convolution (``init_attn``) and fps conditioning.

Inside the network frames are folded into the batch, ``[(b f), c, h, w]`` with the batch
index outermost; only the temporal layers see ``[b, c, f, h, w]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Spatial transformer blocks: in every UNet stage with attention the spatial transformer is
# the layer right after the ResBlock (index 1); the temporal transformer follows at index 2
# and ``init_attn`` is a temporal transformer too, so neither ever matches.
SPATIAL_BLOCK_PATTERN = (
    r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.1\.transformer_blocks\.\d+"
)

# CUDA attention kernels put the batch on a grid axis limited to 65535 blocks; temporal
# attention over every pixel of a large video can exceed that, so it runs in slices.
_MAX_ATTENTION_BATCH = 32768


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------

# Original settings this implementation does not build; the value given is the only one
# accepted (VideoCrafter2 uses exactly these).
_FIXED_PARAMS: dict[str, Any] = {
    "dims": 2,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "tempspatial_aware": False,
    "use_image_dataset": False,
    "use_image_attention": False,
    "ip_adapter": False,
}


@dataclass
class VC2UNetConfig:
    """Constructor settings of the VideoCrafter2 UNet, named as in the original YAML.

    Defaults are the full-size VideoCrafter2 text-to-video model (512x320, 16 frames).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64
    num_heads: int = -1
    transformer_depth: int = 1
    temporal_transformer_depth: int = 1
    context_dim: int = 1024
    dropout: float = 0.0
    conv_resample: bool = True
    use_linear: bool = True
    temporal_conv: bool = True
    #: dropout inside the temporal convolutions (VideoCrafter2 fixes it at 0.1)
    temporal_conv_dropout: float = 0.1
    temporal_attention: bool = True
    #: False: the temporal transformers' ``attn2`` cross-attends to the text (every pixel's
    #: frame sequence sees the whole prompt), as VideoCrafter builds it on request.
    #: VideoCrafter2 sets True: ``attn2`` is a second self-attention over the frames.
    temporal_selfatt_only: bool = True
    use_relative_position: bool = False
    use_causal_attention: bool = False
    temporal_length: int = 16
    #: add sinusoidal frame positions to the temporal attention's tokens (as AnimateDiff's
    #: motion modules do). VideoCrafter2 has none: only its temporal convolutions' zero
    #: padding tells its UNet which frame is which. Not stored in the weights.
    temporal_position_encoding: bool = False
    addition_attention: bool = True
    fps_cond: bool = True
    #: original keys that were accepted but have no effect (kept for the record)
    ignored: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        unsupported = {
            "use_relative_position": (self.use_relative_position, False),
            "use_causal_attention": (self.use_causal_attention, False),
        }
        for name, (value, wanted) in unsupported.items():
            if bool(value) != wanted:
                raise ValueError(
                    f"VC2UNet supports only {name}={wanted} (the VideoCrafter2 setting), "
                    f"got {value!r}"
                )
        if self.num_heads == -1 and self.num_head_channels == -1:
            raise ValueError("set either num_heads or num_head_channels")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> VC2UNetConfig:
        """Build from the original ``unet_config.params`` mapping.

        Switches without effect (``use_checkpoint``, ``use_fp16``) and unknown keys are
        ignored; settings this implementation does not build raise ``ValueError``.
        """
        names = {f.name for f in fields(cls)} - {"ignored"}
        kwargs: dict[str, Any] = {}
        ignored: list[str] = []
        for key, value in params.items():
            if key in names:
                kwargs[key] = value
            elif key in _FIXED_PARAMS:
                if value != _FIXED_PARAMS[key]:
                    raise ValueError(
                        f"VC2UNet supports only {key}={_FIXED_PARAMS[key]!r}, got {value!r}"
                    )
            else:
                ignored.append(key)
        return cls(**kwargs, ignored=tuple(ignored))

    @property
    def temporal_context_dim(self) -> int | None:
        """Width of the text the temporal transformers read; None when they read none."""
        return None if self.temporal_selfatt_only else self.context_dim

    def heads_for(self, channels: int) -> tuple[int, int]:
        """``(heads, dim_head)`` of the spatial and temporal attention at ``channels`` width."""
        if self.num_head_channels != -1:
            return channels // self.num_head_channels, self.num_head_channels
        return self.num_heads, channels // self.num_heads


# --------------------------------------------------------------------------------------
# small pieces
# --------------------------------------------------------------------------------------


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0):
    """Sinusoidal features of scalar positions (timesteps, fps): ``[b] -> [b, dim]``.

    Layout is ``[cos | sin]`` (cosines first), as the checkpoint was trained with.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=positions.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = positions.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (half precision overflows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        out = F.group_norm(x.float(), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


def embedding_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear -> SiLU -> Linear``; used for the timestep and the fps embeddings."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


def _fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``[b, c, f, h, w] -> [(b f), c, h, w]``."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def _unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[(b f), c, h, w] -> [b, c, f, h, w]``."""
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


# --------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention; self-attention when no context is given.

    ``to_out`` is a Sequential (Linear, Dropout) because the checkpoint names the output
    projection ``to_out.0``.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, L, heads * d] -> [n, heads, L, d]``."""
        n, length, _ = x.shape
        return x.view(n, length, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x [n, L, query_dim]``, ``context [n, L_ctx, context_dim]`` -> ``[n, L, query_dim]``."""
        context = x if context is None else context
        q = self._split_heads(self.to_q(x))
        k = self._split_heads(self.to_k(context))
        v = self._split_heads(self.to_v(context))
        if q.shape[0] <= _MAX_ATTENTION_BATCH:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            parts = zip(*(t.split(_MAX_ATTENTION_BATCH) for t in (q, k, v)), strict=True)
            out = torch.cat([F.scaled_dot_product_attention(*part) for part in parts])
        n, _, length, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(n, length, self.heads * self.dim_head))


class GEGLU(nn.Module):
    """Gated GELU input projection of the feed-forward: ``[..., dim] -> [..., dim_out]``."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``GEGLU -> Dropout -> Linear`` with a 4x hidden width; children sit under ``net``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        hidden = dim * mult
        self.net = nn.Sequential(GEGLU(dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``attn1`` (self), ``attn2`` (cross, or self without context), ``ff``.

    ``x [n, L, dim]``, ``context [n, L_ctx, context_dim]`` or None.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = Attention(dim, heads, dim_head, context_dim=context_dim, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


def _project(proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a channel projection to tokens ``[n, L, c]``; a 1x1 Conv1d wants ``[n, c, L]``."""
    if isinstance(proj, nn.Conv1d):
        return proj(x.transpose(1, 2)).transpose(1, 2)
    return proj(x)


class SpatialTransformer(nn.Module):
    """Attention over the pixels of each frame, cross-attending to the text context.

    ``x [(b f), c, h, w]``, ``context [(b f), L, context_dim]`` -> ``[(b f), c, h, w]``.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int,
        context_dim: int,
        use_linear: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not use_linear:
            raise ValueError("VC2UNet builds the spatial transformer with use_linear=True only")
        inner_dim = heads * dim_head
        self.norm = GroupNorm32(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner_dim, heads, dim_head, context_dim, dropout) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner_dim, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [n, h*w, c]
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = self.proj_out(tokens)
        return x + tokens.transpose(1, 2).reshape(n, c, h, w)


class TemporalTransformer(nn.Module):
    """Attention along the frames of each pixel.

    ``x [b, c, f, h, w] -> [b, c, f, h, w]``. With ``use_linear=False`` the projections are
    1x1 Conv1d layers (the checkpoint's ``init_attn`` stores them that way). With a
    ``context_dim`` each block's ``attn2`` cross-attends to the text ``[b, L, context_dim]``
    (the same prompt for every pixel); without one it is a second self-attention.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int,
        use_linear: bool = True,
        dropout: float = 0.0,
        position_encoding: bool = False,
        context_dim: int | None = None,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        self.position_encoding = position_encoding
        self.cross_attention = context_dim is not None
        self.norm = GroupNorm32(32, channels, eps=1e-6)
        if use_linear:
            self.proj_in: nn.Module = nn.Linear(channels, inner_dim)
            self.proj_out: nn.Module = nn.Linear(inner_dim, channels)
        else:
            self.proj_in = nn.Conv1d(channels, inner_dim, kernel_size=1)
            self.proj_out = nn.Conv1d(inner_dim, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner_dim, heads, dim_head, context_dim, dropout) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, f, h, w = x.shape
        if self.cross_attention:
            if context is None:
                raise ValueError(
                    "this temporal transformer cross-attends to the text: pass context"
                )
            context = context.repeat_interleave(h * w, dim=0)  # [b, L, d] -> [(b h w), L, d]
        else:
            context = None
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)
        tokens = _project(self.proj_in, tokens)
        if self.position_encoding:
            tokens = tokens + frame_positions(f, tokens.shape[-1]).to(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = _project(self.proj_out, tokens)
        return x + tokens.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)


def frame_positions(frames: int, dim: int) -> torch.Tensor:
    """Transformer-style sinusoidal positions ``[frames, dim]``: sines in the even
    channels, cosines in the odd ones, wavelengths from 2 pi to 10000 * 2 pi."""
    position = torch.arange(frames, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(frames, dim)
    out[:, 0::2] = torch.sin(position * rate)
    out[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return out


# --------------------------------------------------------------------------------------
# convolutional pieces
# --------------------------------------------------------------------------------------


class TemporalConvBlock(nn.Module):
    """Four residual-summed 1D convolutions over frames (kernel 3 in time, 1x1 in space).

    ``x [b, c, f, h, w] -> [b, c, f, h, w]``; children ``convN`` are (norm, SiLU, [dropout,]
    conv) Sequentials as in the checkpoint.
    """

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()

        def layer(with_dropout: bool) -> nn.Sequential:
            conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
            parts = [GroupNorm32(32, channels), nn.SiLU()]
            parts += [nn.Dropout(dropout)] if with_dropout else []
            return nn.Sequential(*parts, conv)

        self.conv1 = layer(with_dropout=False)
        self.conv2 = layer(with_dropout=True)
        self.conv3 = layer(with_dropout=True)
        self.conv4 = layer(with_dropout=True)
        # a fresh block starts as the identity
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """Timestep-conditioned residual block, then (optionally) a temporal convolution block.

    ``x [(b f), c_in, h, w]``, ``emb [(b f), emb_dim]`` -> ``[(b f), c_out, h, w]``.
    """

    def __init__(
        self,
        channels: int,
        emb_dim: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        temporal_conv: bool = True,
        temporal_conv_dropout: float = 0.1,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            GroupNorm32(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        if temporal_conv:
            # the checkpoint spells it this way
            self.temopral_conv = TemporalConvBlock(out_channels, temporal_conv_dropout)
        self.temporal_conv = temporal_conv

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        if self.temporal_conv:
            h = _fold_frames(self.temopral_conv(_unfold_frames(h, num_frames)))
        return h


class Downsample(nn.Module):
    """Halve height and width: ``[n, c, h, w] -> [n, c, h/2, w/2]``."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.op = (
            nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            if use_conv
            else nn.AvgPool2d(kernel_size=2, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double height and width (nearest), then a 3x3 conv: ``[n, c, h, w] -> [n, c, 2h, 2w]``."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


# --------------------------------------------------------------------------------------
# the UNet
# --------------------------------------------------------------------------------------


@dataclass
class _Conditioning:
    """What every UNet stage may need besides the features."""

    emb: torch.Tensor  # [(b f), emb_dim]
    context: torch.Tensor  # [(b f), L, context_dim]
    num_frames: int

    @property
    def video_context(self) -> torch.Tensor:
        """The text once per video, ``[b, L, context_dim]``, for the temporal layers."""
        return self.context[:: self.num_frames]


class UNetStage(nn.ModuleList):
    """One entry of ``input_blocks`` / ``output_blocks`` or the ``middle_block``.

    Its layers run in order; each gets the inputs its kind needs. ``[(b f), c, h, w]`` in
    and out.
    """

    def forward(self, x: torch.Tensor, cond: _Conditioning) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, cond.emb, cond.num_frames)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, cond.context)
            elif isinstance(layer, TemporalTransformer):
                x = _fold_frames(layer(_unfold_frames(x, cond.num_frames), cond.video_context))
            else:
                x = layer(x)
        return x


class InitTemporalAttention(UNetStage):
    """``init_attn``: a temporal transformer right after the first convolution.

    It always has 8 heads of ``num_head_channels`` and 1x1 Conv1d projections.
    """

    HEADS = 8

    def __init__(self, config: VC2UNetConfig):
        dim_head = config.num_head_channels
        if dim_head == -1:
            raise ValueError("addition_attention needs num_head_channels")
        super().__init__(
            [
                TemporalTransformer(
                    config.model_channels,
                    self.HEADS,
                    dim_head,
                    config.transformer_depth,
                    use_linear=False,
                    position_encoding=config.temporal_position_encoding,
                    context_dim=config.temporal_context_dim,
                )
            ]
        )


class VC2UNet(nn.Module):
    """The VideoCrafter2 3D UNet (eps prediction).

    Set ``gradient_checkpointing`` (or call ``enable_gradient_checkpointing``) to recompute
    each UNet stage in the backward pass instead of storing its activations.
    """

    spatial_block_pattern = SPATIAL_BLOCK_PATTERN

    def __init__(self, config: VC2UNetConfig | None = None):
        super().__init__()
        config = config or VC2UNetConfig()
        self.config = config
        self.gradient_checkpointing = False
        mc = config.model_channels
        emb_dim = mc * 4

        self.time_embed = embedding_mlp(mc, emb_dim)
        if config.fps_cond:
            self.fps_embedding = embedding_mlp(mc, emb_dim)

        def res_block(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(
                ch_in,
                emb_dim,
                ch_out,
                config.dropout,
                config.temporal_conv,
                config.temporal_conv_dropout,
            )

        def attention_layers(ch: int) -> list[nn.Module]:
            # the original passes the UNet's dropout to ResBlocks only, never to attention
            heads, dim_head = config.heads_for(ch)
            layers: list[nn.Module] = [
                SpatialTransformer(
                    ch,
                    heads,
                    dim_head,
                    config.transformer_depth,
                    config.context_dim,
                    config.use_linear,
                )
            ]
            if config.temporal_attention:
                layers.append(
                    TemporalTransformer(
                        ch,
                        heads,
                        dim_head,
                        config.temporal_transformer_depth,
                        config.use_linear,
                        position_encoding=config.temporal_position_encoding,
                        context_dim=config.temporal_context_dim,
                    )
                )
            return layers

        self.input_blocks = nn.ModuleList(
            [UNetStage([nn.Conv2d(config.in_channels, mc, 3, padding=1)])]
        )
        if config.addition_attention:
            self.init_attn = InitTemporalAttention(config)

        skip_channels = [mc]
        ch, downsample = mc, 1
        last_level = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, mult * mc)]
                ch = mult * mc
                if downsample in config.attention_resolutions:
                    layers += attention_layers(ch)
                self.input_blocks.append(UNetStage(layers))
                skip_channels.append(ch)
            if level != last_level:
                self.input_blocks.append(UNetStage([Downsample(ch, config.conv_resample)]))
                skip_channels.append(ch)
                downsample *= 2

        self.middle_block = UNetStage([res_block(ch, ch), *attention_layers(ch), res_block(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if downsample in config.attention_resolutions:
                    layers += attention_layers(ch)
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch, config.conv_resample))
                    downsample //= 2
                self.output_blocks.append(UNetStage(layers))

        self.out = nn.Sequential(
            GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(mc, config.out_channels, 3, padding=1)
        )

    # --- gradient checkpointing ---------------------------------------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the UNet computes in: its norms' (weights kept in float8 are cast up to
        it layer by layer, norms never are)."""
        return self.out[0].weight.dtype

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False

    def _run(self, stage: UNetStage, h: torch.Tensor, cond: _Conditioning) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, h, cond, use_reentrant=False)
        return stage(h, cond)

    # --- forward ------------------------------------------------------------------------
    def embed_conditions(
        self, timesteps: torch.Tensor, fps: int | float | torch.Tensor
    ) -> torch.Tensor:
        """Timestep (+ fps) embedding: ``[b] -> [b, 4 * model_channels]``."""
        mc = self.config.model_channels
        dtype = self.compute_dtype
        emb = self.time_embed(sinusoidal_embedding(timesteps, mc).to(dtype))
        if self.config.fps_cond:
            fps = torch.as_tensor(fps, device=timesteps.device)
            fps = fps.expand(timesteps.shape[0]) if fps.ndim == 0 else fps
            emb = emb + self.fps_embedding(sinusoidal_embedding(fps, mc).to(dtype))
        return emb

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        fps: int | float | torch.Tensor = 16,
    ) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: noisy latents ``[b, c, f, h, w]``; h and w divisible by
                ``2 ** (len(channel_mult) - 1)``.
            timesteps: ``[b]`` (or a scalar, used for the whole batch).
            context: text context ``[b, L, context_dim]``.
            fps: frames per second the video should move at, an int or ``[b]``.

        Returns:
            ``[b, out_channels, f, h, w]`` in ``x``'s dtype.
        """
        b, _, f, _, _ = x.shape
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        dtype = self.compute_dtype
        emb = self.embed_conditions(timesteps, fps)
        cond = _Conditioning(
            emb=emb.repeat_interleave(f, dim=0),
            context=context.to(dtype).repeat_interleave(f, dim=0),
            num_frames=f,
        )

        h = _fold_frames(x.to(dtype))
        skips = []
        for index, stage in enumerate(self.input_blocks):
            h = self._run(stage, h, cond)
            if index == 0 and self.config.addition_attention:
                h = self._run(self.init_attn, h, cond)
            skips.append(h)
        h = self._run(self.middle_block, h, cond)
        for stage in self.output_blocks:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), cond)
        return _unfold_frames(self.out(h), f).to(x.dtype)


__all__ = [
    "SPATIAL_BLOCK_PATTERN",
    "VC2UNet",
    "VC2UNetConfig",
    "sinusoidal_embedding",
]
