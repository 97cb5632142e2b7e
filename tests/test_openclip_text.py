"""The OpenCLIP text tower: checkpoint layout and agreement with an independent reference."""

from __future__ import annotations

import json

import pytest
import torch
from shared_data import SPEC, needs_spec
from torch import nn

from customcrafter.models.videocrafter2.checkpoint import TEXT_PREFIX as VC2_TEXT_PREFIX
from customcrafter.models.videocrafter2.checkpoint import extract_text_state_dict, infer_text_config
from customcrafter.models.videocrafter2.text import OpenCLIPTextConfig, OpenCLIPTextEncoder

TINY = OpenCLIPTextConfig(vocab_size=100, context_length=12, width=32, heads=2, layers=3)


def tiny_encoder(config: OpenCLIPTextConfig = TINY, seed: int = 0) -> OpenCLIPTextEncoder:
    torch.manual_seed(seed)
    enc = OpenCLIPTextEncoder(config).eval()
    # random biases and norms too, so a wrong wiring of any tensor shows up
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if name.endswith("bias") or ".ln" in name or name.startswith("ln_"):
                p.add_(0.1 * torch.randn_like(p))
    return enc


def reference_forward(sd: dict[str, torch.Tensor], cfg: OpenCLIPTextConfig, ids: torch.Tensor):
    """open_clip's computation rebuilt from torch's own modules, sequence-first as there."""
    n = ids.shape[1]
    x = nn.functional.embedding(ids, sd["token_embedding.weight"]) + sd["positional_embedding"]
    x = x.permute(1, 0, 2)  # [n, b, width]
    mask = torch.full((n, n), float("-inf")).triu_(1)
    for i in range(cfg.layers - 1):  # penultimate: stop before the final block
        p = f"transformer.resblocks.{i}."
        attn = nn.MultiheadAttention(cfg.width, cfg.heads)
        attn.load_state_dict(
            {k[len(p) + 5 :]: v for k, v in sd.items() if k.startswith(p + "attn.")}
        )
        ln_1, ln_2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        ln_1.load_state_dict({"weight": sd[p + "ln_1.weight"], "bias": sd[p + "ln_1.bias"]})
        ln_2.load_state_dict({"weight": sd[p + "ln_2.weight"], "bias": sd[p + "ln_2.bias"]})
        h = ln_1(x)
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = nn.functional.linear(ln_2(x), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        h = nn.functional.gelu(h)
        x = x + nn.functional.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    x = x.permute(1, 0, 2)
    return nn.functional.layer_norm(x, (cfg.width,), sd["ln_final.weight"], sd["ln_final.bias"])


@needs_spec
def test_full_size_keys_and_shapes_match_checkpoint():
    spec = json.loads(SPEC.read_text())
    expected = {
        k[len(VC2_TEXT_PREFIX) :]: tuple(v)
        for k, v in spec.items()
        if k.startswith(VC2_TEXT_PREFIX)
    }
    assert len(expected) == 294
    assert infer_text_config(expected) == OpenCLIPTextConfig()
    with torch.device("meta"):
        enc = OpenCLIPTextEncoder()
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert got == expected

    # extraction keeps exactly the text tensors and names any stray or absent one
    fake = {VC2_TEXT_PREFIX + k: torch.empty(s, device="meta") for k, s in expected.items()}
    fake["model.diffusion_model.out.0.weight"] = torch.empty(0, device="meta")
    assert set(extract_text_state_dict(fake)) == set(expected)
    with pytest.raises(KeyError, match="token_embedding"):
        extract_text_state_dict({k: v for k, v in fake.items() if "token_embedding" not in k})


def test_extract_rejects_unplaced_and_missing_keys():
    sd = {VC2_TEXT_PREFIX + k: v for k, v in tiny_encoder().state_dict().items()}
    sd["first_stage_model.x"] = torch.zeros(1)
    assert set(extract_text_state_dict(sd)) == set(tiny_encoder().state_dict())
    with pytest.raises(KeyError, match="stray"):
        extract_text_state_dict({**sd, VC2_TEXT_PREFIX + "stray.weight": torch.zeros(1)})
    missing = dict(sd)
    del missing[VC2_TEXT_PREFIX + "ln_final.bias"]
    with pytest.raises(KeyError, match="ln_final.bias"):
        extract_text_state_dict(missing)


def test_tiny_matches_reference_and_loads_strictly():
    src = tiny_encoder(seed=1)
    ckpt = {VC2_TEXT_PREFIX + k: v for k, v in src.state_dict().items()}
    sd = extract_text_state_dict(ckpt)
    config = infer_text_config(sd, heads=TINY.heads)
    assert config == TINY
    enc = OpenCLIPTextEncoder(config).eval()
    enc.load_state_dict(sd, strict=True)
    ids = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    with torch.no_grad():
        out = enc(ids)
        ref = reference_forward(sd, TINY, ids)
    assert out.shape == (2, TINY.context_length, TINY.width)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_penultimate_differs_from_last_and_is_causal():
    enc = tiny_encoder()
    last = OpenCLIPTextEncoder(OpenCLIPTextConfig(**{**TINY.__dict__, "output_layer": "last"}))
    last.load_state_dict(enc.state_dict())
    ids = torch.randint(0, TINY.vocab_size, (1, TINY.context_length))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % TINY.vocab_size
    with torch.no_grad():
        out, out_changed, out_last = enc(ids), enc(changed), last(ids)
    assert not torch.allclose(out, out_last, atol=1e-4)
    torch.testing.assert_close(out_changed[:, :5], out[:, :5], atol=0, rtol=0)
    assert not torch.allclose(out_changed[:, 5:], out[:, 5:], atol=1e-4)


class _ShiftedEmbedding(nn.Module):
    """A wrapper in the manner of SubjectTokenEmbedding: the base table plus a fixed vector.

    The shift is not constant across features, since the pre-norm blocks and ``ln_final``
    would cancel a constant one.
    """

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.register_buffer("shift", torch.linspace(-1.0, 1.0, base.embedding_dim))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base(input_ids) + self.shift


def test_input_embeddings_can_be_swapped():
    enc = tiny_encoder()
    base = enc.get_input_embeddings()
    assert base is enc.token_embedding and isinstance(base, nn.Embedding)
    ids = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    with torch.no_grad():
        before = enc(ids)
        enc.set_input_embeddings(_ShiftedEmbedding(base))
        after = enc(ids)
    assert enc.get_input_embeddings().base is base
    assert "token_embedding.base.weight" in enc.state_dict()
    assert not torch.allclose(before, after, atol=1e-4)

    # the output follows the wrapper: same as folding the shift into the table itself
    folded = tiny_encoder()
    with torch.no_grad():
        folded.token_embedding.weight.add_(enc.get_input_embeddings().shift)
        torch.testing.assert_close(folded(ids), after, atol=1e-5, rtol=1e-5)
