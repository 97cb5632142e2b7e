"""The VideoCrafter2 UNet: loads the original checkpoint layout and reproduces its numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
from safetensors import safe_open
from shared_data import GOLDEN, SPEC, needs_golden, needs_spec
from torch import nn

from customcrafter.models.videocrafter2.checkpoint import infer_unet_config
from customcrafter.models.videocrafter2.unet import (
    SPATIAL_BLOCK_PATTERN,
    SpatialTransformer,
    TemporalTransformer,
    VC2UNet,
    VC2UNetConfig,
    frame_positions,
)

UNET_PREFIX = "model.diffusion_model."


@pytest.fixture(scope="module")
def golden():
    """Tiny UNet config, its weights (original key names) and the original code's call."""
    with safe_open(str(GOLDEN), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        prefix = "ckpt." + UNET_PREFIX
        weights = {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
        call = {name: f.get_tensor(f"unet.{name}") for name in ("x", "t", "context", "out")}
    params = meta["config"]["params"]["unet_config"]["params"]
    return params, weights, call, meta["unet_call"]["fps"]


@pytest.fixture(scope="module")
def full_size_unet() -> VC2UNet:
    with torch.device("meta"):
        return VC2UNet(VC2UNetConfig())


def full_size_spec_shapes() -> dict[str, list[int]]:
    spec = json.loads(SPEC.read_text())
    return {k[len(UNET_PREFIX) :]: v for k, v in spec.items() if k.startswith(UNET_PREFIX)}


def tiny_config() -> VC2UNetConfig:
    return VC2UNetConfig(
        model_channels=32,
        attention_resolutions=(1, 2),
        num_res_blocks=1,
        channel_mult=(1, 2),
        num_head_channels=8,
        context_dim=16,
        temporal_length=4,
    )


# --- the original numbers ------------------------------------------------------------------


@needs_golden
def test_golden_weights_load_strictly_and_reproduce_the_original_output(golden):
    params, weights, call, fps = golden
    unet = VC2UNet(VC2UNetConfig.from_dict(params)).eval()
    unet.load_state_dict(weights, strict=True)

    with torch.no_grad():
        out = unet(call["x"], call["t"], call["context"], fps=fps)

    expected = call["out"]
    assert out.shape == expected.shape
    max_abs = (out - expected).abs().max().item()
    assert max_abs <= 1e-5 * expected.abs().max().item(), max_abs


@needs_golden
def test_fps_may_be_an_int_or_a_per_sample_tensor(golden):
    params, weights, call, fps = golden
    unet = VC2UNet(VC2UNetConfig.from_dict(params)).eval()
    unet.load_state_dict(weights)
    x, t, context = call["x"][:, :, :2], call["t"], call["context"]

    with torch.no_grad():
        as_int = unet(x, t, context, fps=fps)
        as_tensor = unet(x, t, context, fps=torch.full_like(t, fps))
        other_fps = unet(x, t, context, fps=torch.full_like(t, fps // 2))

    torch.testing.assert_close(as_int, as_tensor)
    assert not torch.allclose(as_int, other_fps)


# --- the checkpoint layout -----------------------------------------------------------------


@needs_spec
def test_full_size_state_dict_matches_the_videocrafter2_checkpoint(full_size_unet):
    expected = full_size_spec_shapes()
    actual = {k: list(v.shape) for k, v in full_size_unet.state_dict().items()}

    assert len(expected) == 1484
    assert sorted(set(expected) - set(actual)) == [], "missing keys"
    assert sorted(set(actual) - set(expected)) == [], "unexpected keys"
    assert {k: v for k, v in actual.items() if v != expected[k]} == {}, "shape mismatches"


@needs_spec
def test_config_is_inferred_from_the_full_size_checkpoint_shapes():
    inferred = infer_unet_config(full_size_spec_shapes())

    assert set(inferred.attention_resolutions) == {4, 2, 1}
    assert inferred == VC2UNetConfig(attention_resolutions=inferred.attention_resolutions)


@needs_golden
def test_config_is_inferred_from_the_tiny_weights(golden):
    params, weights, _, _ = golden
    inferred = infer_unet_config(weights)
    expected = VC2UNetConfig.from_dict(params)

    assert set(inferred.attention_resolutions) == set(expected.attention_resolutions)
    unchecked = {"attention_resolutions": (), "temporal_length": 0}  # order; not in weights
    assert VC2UNetConfig(**{**vars(inferred), **unchecked}) == VC2UNetConfig(
        **{**vars(expected), **unchecked}
    )


def test_default_config_is_the_full_size_videocrafter2_unet():
    params = {
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 320,
        "attention_resolutions": [4, 2, 1],
        "num_res_blocks": 2,
        "channel_mult": [1, 2, 4, 4],
        "num_head_channels": 64,
        "transformer_depth": 1,
        "context_dim": 1024,
        "use_linear": True,
        "use_checkpoint": True,
        "temporal_conv": True,
        "temporal_attention": True,
        "temporal_selfatt_only": True,
        "use_relative_position": False,
        "use_causal_attention": False,
        "temporal_length": 16,
        "addition_attention": True,
        "fps_cond": True,
    }
    config = VC2UNetConfig.from_dict(params)

    assert config == VC2UNetConfig()
    assert config.ignored == ("use_checkpoint",)


@pytest.mark.parametrize(
    "setting",
    [
        {"use_relative_position": True},
        {"use_causal_attention": True},
        {"use_scale_shift_norm": True},
        {"resblock_updown": True},
    ],
)
def test_config_rejects_settings_it_does_not_build(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        VC2UNetConfig.from_dict(setting)


# --- spatial transformer blocks (the subject module's targets) -------------------------


def spatial_block_names(unet: nn.Module) -> list[str]:
    """Names of the blocks inside every SpatialTransformer, found by type (not by name)."""
    return [
        f"{name}.transformer_blocks.{i}"
        for name, module in unet.named_modules()
        if isinstance(module, SpatialTransformer)
        for i in range(len(module.transformer_blocks))
    ]


def matched_names(unet: nn.Module) -> list[str]:
    pattern = re.compile(SPATIAL_BLOCK_PATTERN)
    return [name for name, _ in unet.named_modules() if pattern.fullmatch(name)]


def test_spatial_pattern_matches_exactly_the_spatial_transformer_blocks(full_size_unet):
    matched = matched_names(full_size_unet)

    assert matched == spatial_block_names(full_size_unet)
    assert len(matched) == 16  # 6 down, 1 middle, 9 up
    assert VC2UNet.spatial_block_pattern == SPATIAL_BLOCK_PATTERN


def test_spatial_pattern_skips_temporal_and_init_attention(full_size_unet):
    temporal = [
        name
        for name, _ in full_size_unet.named_modules()
        if re.search(r"transformer_blocks\.\d+$", name)
        and name not in matched_names(full_size_unet)
    ]

    assert any(name.startswith("init_attn.") for name in temporal)
    assert any(name.startswith("middle_block.2.") for name in temporal)
    assert len(temporal) == 1 + 16  # init_attn + one temporal transformer per spatial one


def test_each_spatial_block_holds_self_and_cross_attention_projections(full_size_unet):
    modules = dict(full_size_unet.named_modules())
    for name in matched_names(full_size_unet):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v"):
                assert isinstance(modules[f"{name}.{attn}.{proj}"], nn.Linear)
            assert isinstance(modules[f"{name}.{attn}.to_out.0"], nn.Linear)
        # attn2 reads the 1024-wide text context
        assert modules[f"{name}.attn2.to_k"].in_features == 1024


# --- training ------------------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_stages_and_keeps_gradients():
    torch.manual_seed(0)
    unet = VC2UNet(tiny_config()).train()
    x = torch.randn(1, 4, 2, 8, 8)
    t = torch.tensor([500])
    context = torch.randn(1, 3, 16)
    calls = []
    # a pre-hook: recomputation stops early, before a forward hook would fire
    unet.middle_block.register_forward_pre_hook(lambda *_: calls.append(1))

    def grads() -> dict[str, torch.Tensor]:
        unet.zero_grad()
        torch.manual_seed(1)  # same dropout masks in both runs
        unet(x, t, context, fps=8).square().mean().backward()
        return {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}

    plain = grads()
    assert len(calls) == 1
    unet.enable_gradient_checkpointing()
    checkpointed = grads()
    assert len(calls) == 3  # forward + recomputation in backward

    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


@needs_spec
def test_the_converter_consumes_every_key_of_the_full_size_checkpoint():
    """All 2039 tensors of the real checkpoint, as meta tensors: each lands in a component
    of the full-size model with its shape, or is a schedule buffer the settings regenerate."""
    from customcrafter.models.videocrafter2.checkpoint import split_checkpoint
    from customcrafter.models.videocrafter2.text import OpenCLIPTextConfig
    from customcrafter.models.videocrafter2.vae import VC2_VAE_DDCONFIG, vae_config_from_ddconfig

    spec = json.loads(SPEC.read_text())
    state = {k: torch.empty(v, device="meta") for k, v in spec.items()}
    parts = split_checkpoint(state)
    assert parts.unet_config == VC2UNetConfig()
    assert parts.text_config == OpenCLIPTextConfig()
    assert parts.vae_config == {**vae_config_from_ddconfig(VC2_VAE_DDCONFIG), "sample_size": 256}
    buffers = [k for k in spec if not k.startswith(("model.", "first_stage", "cond_stage"))]
    assert len(buffers) == 13
    assert len(parts.unet) + len(parts.vae) + len(parts.text) + len(buffers) == len(spec) == 2039


def test_temporal_convolutions_are_what_tell_the_frames_apart():
    """VideoCrafter2's temporal attention has no position encoding: without the temporal
    convolutions the UNet gives a clip played backwards the same answer, played backwards,
    and so cannot tell "moving left" from "moving right"."""
    x = torch.randn(1, 4, 4, 8, 8)
    t, context = torch.tensor([500]), torch.randn(1, 5, 16)

    def forward_and_reversed(config):
        torch.manual_seed(0)
        unet = VC2UNet(config).eval()
        for module in unet.modules():  # a fresh temporal block starts as the identity
            if isinstance(module, nn.Conv3d):
                nn.init.normal_(module.weight, std=0.05)
        with torch.no_grad():
            return unet(x, t, context, fps=8), unet(x.flip(2), t, context, fps=8).flip(2)

    forward, backward = forward_and_reversed(
        dataclasses.replace(tiny_config(), temporal_conv=False)
    )
    assert torch.allclose(forward, backward, atol=1e-5)
    forward, backward = forward_and_reversed(tiny_config())
    assert not torch.allclose(forward, backward, atol=1e-4)
    # frame positions in the temporal attention tell them apart too, without convolutions
    forward, backward = forward_and_reversed(
        dataclasses.replace(tiny_config(), temporal_conv=False, temporal_position_encoding=True)
    )
    assert not torch.allclose(forward, backward, atol=1e-4)


def test_frame_positions_are_the_transformer_sinusoids():
    table = frame_positions(5, 6)
    for pos in range(5):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_frame_positions_are_a_setting_outside_the_weights():
    plain = VC2UNet(tiny_config())
    positioned = VC2UNet(dataclasses.replace(tiny_config(), temporal_position_encoding=True))
    assert plain.state_dict().keys() == positioned.state_dict().keys()
    flags = [m.position_encoding for m in positioned.modules() if hasattr(m, "position_encoding")]
    assert flags and all(flags)


def test_temporal_conv_dropout_is_a_setting():
    config = dataclasses.replace(tiny_config(), temporal_conv_dropout=0.0)
    rates = {m.p for m in VC2UNet(config).modules() if isinstance(m, nn.Dropout)}
    default = {m.p for m in VC2UNet(tiny_config()).modules() if isinstance(m, nn.Dropout)}
    assert 0.1 in default and 0.1 not in rates


# --- temporal cross-attention (temporal_selfatt_only=False) ------------------------------


def text_in_time_config() -> VC2UNetConfig:
    return dataclasses.replace(tiny_config(), temporal_selfatt_only=False)


def test_temporal_cross_attention_reads_the_text_in_every_temporal_transformer():
    config = text_in_time_config()
    unet = VC2UNet(config)
    temporal = [m for m in unet.modules() if isinstance(m, TemporalTransformer)]
    assert len(temporal) == 1 + len(spatial_block_names(unet))  # init_attn included
    for module in temporal:
        for block in module.transformer_blocks:
            assert block.attn2.to_k.in_features == config.context_dim
            assert block.attn1.to_k.in_features == block.attn1.to_q.in_features
    # VideoCrafter2's setting: attn2 is a second self-attention over the frames
    for module in VC2UNet(tiny_config()).modules():
        if isinstance(module, TemporalTransformer):
            attn2 = module.transformer_blocks[0].attn2
            assert attn2.to_k.in_features == attn2.to_q.in_features


def test_temporal_cross_attention_gives_each_video_its_own_prompt():
    torch.manual_seed(0)
    layer = TemporalTransformer(32, 4, 8, 1, position_encoding=True, context_dim=16).eval()
    nn.init.normal_(layer.proj_out.weight, std=0.1)  # so that the layer is not the identity
    x, context = torch.randn(2, 32, 4, 3, 3), torch.randn(2, 5, 16)
    with torch.no_grad():
        both = layer(x, context)
        second = layer(x[1:], context[1:])
        swapped = layer(x, context.flip(0))
    assert torch.allclose(both[1:], second, atol=1e-5)
    assert not torch.allclose(both, swapped, atol=1e-3)
    with pytest.raises(ValueError, match="context"):
        layer(x)


def test_with_temporal_cross_attention_the_text_reaches_the_temporal_layers():
    """Silence every spatial cross-attention: the prompt then changes the output only when
    the temporal transformers read it, the only layers that also know the frame index."""
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([500])
    contexts = torch.randn(2, 1, 5, 16)

    def text_effect(config) -> float:
        torch.manual_seed(0)
        unet = VC2UNet(config).eval()
        for name, module in unet.named_modules():
            if isinstance(module, nn.Linear) and name.endswith("proj_out"):
                nn.init.normal_(module.weight, std=0.1)  # fresh transformers add nothing
            if isinstance(module, SpatialTransformer):
                for block in module.transformer_blocks:
                    nn.init.zeros_(block.attn2.to_out[0].weight)
                    nn.init.zeros_(block.attn2.to_out[0].bias)
        with torch.no_grad():
            a, b = (unet(x, t, c, fps=8) for c in contexts)
        return (a - b).abs().max().item()

    assert text_effect(tiny_config()) == 0.0
    assert text_effect(text_in_time_config()) > 1e-3


def test_temporal_cross_attention_is_inferred_from_the_weights():
    for config in (tiny_config(), text_in_time_config()):
        inferred = infer_unet_config(VC2UNet(config).state_dict())
        assert inferred.temporal_selfatt_only == config.temporal_selfatt_only
        assert VC2UNet(inferred).load_state_dict(VC2UNet(config).state_dict()) is not None


def test_the_spatial_pattern_never_reaches_temporal_cross_attention():
    unet = VC2UNet(text_in_time_config())
    matched = matched_names(unet)
    assert matched == spatial_block_names(unet)
    temporal_attn2 = [
        name
        for name, module in unet.named_modules()
        if isinstance(module, TemporalTransformer)
        for name in [f"{name}.transformer_blocks.0.attn2"]
    ]
    assert temporal_attn2 and not any(n.startswith(m) for n in temporal_attn2 for m in matched)
