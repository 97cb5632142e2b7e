"""diffusers text-to-video models load from a model folder with the usual layout."""

import pytest
import torch

from customcrafter.errors import UserError
from customcrafter.models import DiffusersT2VModel, build_tiny_t2v, load_base_model


def test_a_saved_model_folder_loads_back_and_predicts_the_same(tmp_path):
    model = build_tiny_t2v()
    model.save_pretrained(tmp_path / "model")
    loaded = load_base_model(str(tmp_path / "model"))
    assert isinstance(loaded, DiffusersT2VModel)
    assert loaded.defaults == model.defaults
    assert loaded.architecture_fingerprint() == model.architecture_fingerprint()
    assert loaded.weights_fingerprint() == model.weights_fingerprint()
    x = torch.randn(1, 4, 2, 16, 16)
    t = torch.tensor([500])
    ctx_a = model.encode_prompts(["a dog"])
    ctx_b = loaded.encode_prompts(["a dog"])
    assert torch.equal(ctx_a, ctx_b)
    assert torch.allclose(model.predict(x, t, ctx_a, 8), loaded.predict(x, t, ctx_b, 8), atol=1e-6)
    assert load_base_model("diffusers:" + str(tmp_path / "model")).name.endswith("model")


def test_an_incomplete_folder_names_what_is_missing(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(UserError, match="missing vae/, text_encoder/, tokenizer/, scheduler/"):
        load_base_model(str(tmp_path))


def test_an_unknown_model_kind_is_refused():
    with pytest.raises(UserError, match="unknown base model kind"):
        load_base_model("nonsense:thing")


def test_the_noise_schedule_matches_the_scheduler_config(tiny_model):
    x0 = torch.randn(1, 4, 2, 4, 4)
    noise = torch.randn_like(x0)
    t = torch.tensor([999])
    abar = tiny_model.noise_schedule.alphas_cumprod[999]
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    assert torch.allclose(tiny_model.add_noise(x0, noise, t), expected, atol=1e-6)
    assert torch.equal(tiny_model.training_target(x0, noise, t), noise)
