"""VideoCrafter2 as a base model: original tensors in, original numbers out, and the same
training and sampling path as every other base model."""

import json
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from shared_data import GOLDEN, needs_golden

from customcrafter.errors import UserError
from customcrafter.models.diffusers_t2v import _tiny_clip_tokenizer
from customcrafter.models.videocrafter2 import VideoCrafter2Model, read_checkpoint
from customcrafter.models.videocrafter2.text import OpenCLIPTextConfig, OpenCLIPTextEncoder

pytestmark = needs_golden


def _tokenizer():
    with tempfile.TemporaryDirectory() as tmp:
        tok = _tiny_clip_tokenizer(Path(tmp))
    tok.pad_token = "!"  # open_clip pads with id 0
    return tok


def _golden_checkpoint():
    """The golden tensors plus a tiny random OpenCLIP text tower (the golden file replaces
    the text encoder by an identity), as one original-format state dict."""
    with safe_open(str(GOLDEN), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        state = {
            k.removeprefix("ckpt."): f.get_tensor(k) for k in f.keys() if k.startswith("ckpt.")
        }
        calls = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("ckpt.")}
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    text = OpenCLIPTextEncoder(
        OpenCLIPTextConfig(vocab_size=len(tokenizer), width=16, heads=2, layers=2)
    )
    state.update({f"cond_stage_model.model.{k}": v for k, v in text.state_dict().items()})
    return state, meta, calls, tokenizer


@pytest.fixture(scope="module")
def golden():
    return _golden_checkpoint()


@pytest.mark.parametrize("with_config", [True, False], ids=["yaml-config", "inferred"])
def test_the_unet_and_vae_reproduce_the_original(golden, with_config):
    state, meta, calls, tokenizer = golden
    config = meta["config"]["params"] if with_config else None
    model = VideoCrafter2Model.from_state_dict(state, tokenizer, config=config)
    with torch.no_grad():
        out = model.predict(
            calls["unet.x"], calls["unet.t"], calls["unet.context"], meta["unet_call"]["fps"]
        )
        assert (out - calls["unet.out"]).abs().max() <= 1e-5 * calls["unet.out"].abs().max()
        frames = calls["vae.decoded_video"].shape[2]
        latent = calls["vae.latent_mean_scaled"][:, :, None].expand(-1, -1, frames, -1, -1)
        video = model.decode_video(latent)
        assert (video - calls["vae.decoded_video"]).abs().max() <= 1e-4 * calls[
            "vae.decoded_video"
        ].abs().max()


def test_training_noise_uses_the_signal_scaling(golden):
    state, meta, _, tokenizer = golden
    model = VideoCrafter2Model.from_state_dict(state, tokenizer, config=meta["config"]["params"])
    x0, noise, t = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 4, 2, 4, 4), torch.tensor([100])
    abar = state["alphas_cumprod"][100].float()
    expected = abar.sqrt() * state["scale_arr"][100] * x0 + (1 - abar).sqrt() * noise
    assert torch.allclose(model.add_noise(x0, noise, t), expected, atol=1e-6)


def test_the_subject_module_trains_and_samples_on_videocrafter2(golden, tmp_path):
    from customcrafter.config import TrainConfig
    from customcrafter.sampling import CustomCrafterPipeline
    from customcrafter.subject import SpatialSubjectModule
    from customcrafter.training import train

    state, meta, _, tokenizer = golden

    def build():
        model = VideoCrafter2Model.from_state_dict(
            state, _tokenizer(), config=meta["config"]["params"]
        )
        model.defaults = model.defaults.__class__(num_frames=2, height=32, width=32, fps=28)
        return model

    from PIL import Image

    (tmp_path / "photos").mkdir()
    for i, color in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (40, 32), color).save(tmp_path / "photos" / f"{i}.png")
    config = TrainConfig(
        instance_data_dir=str(tmp_path / "photos"),
        instance_prompt="video of a <new1> dog",
        prior_loss_weight=0.0,
        output_dir=str(tmp_path / "out"),
        max_train_steps=2,
        train_frames=2,
        learning_rate=1e-2,
    )
    path = train(config, model=build(), progress=False)
    model = build()
    module = SpatialSubjectModule.load(path, model)
    assert all(".1.transformer_blocks." in t for t in module.metadata.targets)
    out = CustomCrafterPipeline(model, module)(
        "a <new1> dog", num_inference_steps=6, progress=False
    )
    # 6 steps do not divide 1000: VideoCrafter2's DDIM spacing (1000 // 6) gives 7
    assert out.videos.shape == (1, 3, 2, 32, 32) and out.weights == [0.4] * 5 + [0.8] * 2


def test_checkpoints_are_read_without_unpickling_code(tmp_path, golden):
    state, *_ = golden
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    assert read_checkpoint(tmp_path / "model.ckpt").keys() == state.keys()
    torch.save({"module": {"module." + k: v for k, v in state.items()}}, tmp_path / "ds.ckpt")
    assert read_checkpoint(tmp_path / "ds.ckpt").keys() == state.keys()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": state, "x": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="weights-only"):
        read_checkpoint(tmp_path / "evil.ckpt")


def test_base_spec_loads_the_original_checkpoint(golden, tmp_path, monkeypatch):
    from customcrafter.models import load_base_model

    state, _, calls, tokenizer = golden
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    monkeypatch.setenv("CUSTOMCRAFTER_OPENCLIP_TOKENIZER", str(tmp_path / "tokenizer"))
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    model = load_base_model(f"videocrafter2:{tmp_path / 'model.ckpt'}")
    assert model.tokenize(["a dog"])[0, -1] == 0  # padded with zeros, as open_clip does
    assert model.defaults.num_frames == 16 and (model.defaults.height, model.defaults.width) == (
        320,
        512,
    )
    with torch.no_grad():
        out = model.predict(calls["unet.x"], calls["unet.t"], calls["unet.context"], 28)
    assert torch.allclose(out, calls["unet.out"], atol=1e-5)
    monkeypatch.setenv("CUSTOMCRAFTER_OPENCLIP_TOKENIZER", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="OpenCLIP tokenizer"):
        load_base_model(f"videocrafter2:{tmp_path / 'model.ckpt'}")


def test_a_step_count_that_adds_a_sampler_step_keeps_the_schedule_aligned(golden):
    from customcrafter.sampling import CustomCrafterPipeline
    from customcrafter.subject import SpatialSubjectModule

    state, meta, _, _ = golden
    model = VideoCrafter2Model.from_state_dict(state, _tokenizer(), config=meta["config"]["params"])
    module = SpatialSubjectModule.create(model, {"<new1>": "dog"})
    out = CustomCrafterPipeline(model, module)(
        "a <new1> dog", num_inference_steps=30, num_frames=1, height=16, width=16, progress=False
    )
    assert len(out.weights) == 31 and out.weights[:5] == [0.4] * 5 and out.weights[5:] == [0.8] * 26


# --- conversion to safetensors components ----------------------------------------------------
def _write_original(tmp_path, state, meta, tokenizer):
    """The golden model as an original ``model.ckpt`` + YAML config + tokenizer folder."""
    import yaml

    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"model": meta["config"]}))
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    return tmp_path / "model.ckpt", tmp_path / "model.yaml", tmp_path / "tokenizer"


def test_convert_writes_components_that_reproduce_the_original(golden, tmp_path):
    from customcrafter.cli import main
    from customcrafter.models import load_base_model

    state, meta, calls, tokenizer = golden
    ckpt, yaml_path, tok = _write_original(tmp_path, state, meta, tokenizer)
    out = tmp_path / "vc2"
    args = ["convert", "videocrafter2", str(ckpt), str(out), "--tokenizer", str(tok)]
    assert main([*args, "--config", str(yaml_path)]) == 0
    for part in (
        "unet/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
        "tokenizer/tokenizer_config.json",
    ):
        assert (out / part).is_file(), part
    # the VAE folder is a plain diffusers AutoencoderKL folder
    from diffusers import AutoencoderKL

    assert AutoencoderKL.from_pretrained(out / "vae").config.scaling_factor == 0.18215

    model = load_base_model(str(out))  # offline: the tokenizer is bundled
    assert model.name == str(out) and model.defaults.fps == 28 and model.defaults.eta == 1.0
    assert model.tokenize(["a dog"])[0, -1] == 0
    with torch.no_grad():
        out_eps = model.predict(calls["unet.x"], calls["unet.t"], calls["unet.context"], 28)
        assert torch.equal(
            out_eps,
            VideoCrafter2Model.from_state_dict(state, tokenizer).predict(
                calls["unet.x"], calls["unet.t"], calls["unet.context"], 28
            ),
        )
        assert (out_eps - calls["unet.out"]).abs().max() <= 1e-5 * calls["unet.out"].abs().max()
    x0, noise, t = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 4, 2, 4, 4), torch.tensor([700])
    abar = state["alphas_cumprod"][700]
    expected = abar.sqrt() * state["scale_arr"][700] * x0 + (1 - abar).sqrt() * noise
    assert torch.allclose(model.add_noise(x0, noise, t), expected, atol=1e-6)

    # the subject token works with the bundled tokenizer
    from customcrafter.subject import SpatialSubjectModule

    SpatialSubjectModule.create(model, {"<new1>": "dog"})
    new_id = model.tokenizer.convert_tokens_to_ids("<new1>")
    assert new_id == len(model.tokenizer) - 1
    assert new_id in model.tokenize(["a <new1> dog"])[0].tolist()

    # a second conversion does not clobber the first without --overwrite; half precision
    assert main([*args]) == 2
    assert main([*args, "--overwrite", "--dtype", "float16"]) == 0
    assert load_base_model(str(out)).dtype == torch.float16


def test_convert_refuses_checkpoints_it_cannot_account_for(golden, tmp_path):
    from customcrafter.models.videocrafter2 import split_checkpoint

    state, meta, _, _ = golden
    with pytest.raises(UserError, match="no component uses.*ema_decay"):
        split_checkpoint({**state, "ema_decay": torch.tensor(0.99)})
    no_scaling = {**meta["config"]["params"], "use_scale": False}
    with pytest.raises(UserError, match="scale_arr"):
        split_checkpoint(state, no_scaling)
    wrong = dict(state)
    wrong["alphas_cumprod"] = wrong["alphas_cumprod"] * 0.5
    with pytest.raises(UserError, match="alphas_cumprod differs"):
        split_checkpoint(wrong)
    broken = {k: v for k, v in state.items() if "ln_final.weight" not in k}
    with pytest.raises(UserError, match="ln_final"):
        split_checkpoint(broken)


def test_a_failed_conversion_leaves_no_output(golden, tmp_path, monkeypatch):
    from customcrafter.models.videocrafter2 import convert_videocrafter2, folder

    state, meta, _, tokenizer = golden
    ckpt, _, _ = _write_original(tmp_path, state, meta, tokenizer)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(folder, "write_json", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_videocrafter2(ckpt, tmp_path / "out", tokenizer=tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "model.yaml", "tokenizer"]
