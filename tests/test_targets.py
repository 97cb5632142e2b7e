"""The Spatial Subject Learning Module adapts spatial attention only."""

import re

import pytest
import torch

from customcrafter.errors import UserError
from customcrafter.subject import SpatialSubjectModule, resolve_targets

SPATIAL_QKV = re.compile(r".*\.attentions\.\d+\.transformer_blocks\.\d+\.attn[12]\.to_[qkv]")
TEMPORAL = ("temp_attentions", "transformer_in", "temp_convs")


def test_every_target_is_spatial_and_every_spatial_qkv_is_a_target(tiny_model):
    targets = resolve_targets(tiny_model, "spatial-qkv")
    expected = {n for n, _ in tiny_model.unet.named_modules() if SPATIAL_QKV.fullmatch(n)}
    assert set(targets) == expected
    assert not any(word in t for t in targets for word in TEMPORAL)
    # the temporal transformers have attn1/attn2 too: they must not be reached
    temporal_qkv = [
        n
        for n, _ in tiny_model.unet.named_modules()
        if "temp_attentions" in n and n.endswith("to_q")
    ]
    assert temporal_qkv and not set(temporal_qkv) & set(targets)


def test_presets_select_the_ablation_layers(tiny_model):
    cross_kv = resolve_targets(tiny_model, "spatial-cross-kv")
    assert cross_kv and all(re.search(r"attn2\.to_[kv]$", t) for t in cross_kv)
    qkvo = resolve_targets(tiny_model, "spatial-qkvo")
    assert len(qkvo) == len(resolve_targets(tiny_model)) + 2 * len(tiny_model.spatial_blocks())
    assert any(t.endswith("attn1.to_out.0") for t in qkvo)


def test_override_replaces_the_preset(tiny_model):
    targets = resolve_targets(tiny_model, override=["attn1.to_v"])
    assert len(targets) == len(tiny_model.spatial_blocks())
    assert all(t.endswith("attn1.to_v") for t in targets)


def test_unknown_preset_and_missing_layer_are_user_errors(tiny_model):
    with pytest.raises(UserError, match="unknown LoRA target preset"):
        resolve_targets(tiny_model, "everything")
    with pytest.raises(UserError, match="does not exist"):
        resolve_targets(tiny_model, override=["attn3.to_q"])


def test_injected_lora_follows_the_authors_initialisation(tiny_model):
    module = SpatialSubjectModule.create(tiny_model, {"<new1>": "dog"}, rank=4)
    a = module.lora_parameters()[0::2]
    b = module.lora_parameters()[1::2]
    assert all(p.shape[0] == 4 for p in a)
    assert all(float(p.detach().abs().max()) == 0.0 for p in b)
    std = float(torch.cat([p.detach().flatten() for p in a]).std())
    assert abs(std - 1 / 4) < 0.02
    lora_modules = [n for n, m in tiny_model.unet.named_modules() if hasattr(m, "lora_A")]
    assert sorted(lora_modules) == sorted(module.metadata.targets)
