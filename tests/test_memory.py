"""The memory options: frozen weights in float8 (diffusers' layerwise casting), on the tiny
models; the subject module and its file do not change with them."""

import json

import pytest
import torch
from conftest import identifier_subject
from safetensors import safe_open
from test_training import _config
from test_wan import WAN_TRAINING

from customcrafter.cli import main
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.training import train

#: tiny-wan's size, four steps, the switch inside them
SETTINGS = dict(num_inference_steps=4, num_frames=5, height=16, width=16, k=2)
#: how far a float8 video may stand from the bf16 one (mean and largest pixel difference,
#: pixels in [0, 1]); measured: 4e-4 and 0.02, against 1e-3 and 0.03 between bf16 and fp32
TOLERANCE = {"mean": 5e-3, "max": 0.1}


@pytest.fixture(scope="module")
def wan_subject(tmp_path_factory):
    """A tiny-wan subject whose LoRA visibly changes the video."""
    return identifier_subject(tmp_path_factory.mktemp("fp8") / "subject.safetensors", 0.5)


def _video(subject, weights_dtype=None, **kwargs):
    pipe = CustomCrafterPipeline.from_pretrained(
        subject=subject, dtype=torch.bfloat16, weights_dtype=weights_dtype
    )
    return pipe("a sks dog", progress=False, **SETTINGS, **kwargs).videos, pipe


def _close(a, b) -> bool:
    difference = (a - b).abs()
    return difference.mean() < TOLERANCE["mean"] and difference.max() < TOLERANCE["max"]


def test_float8_weights_sample_close_to_bf16_and_not_equal(wan_subject):
    bf16, _ = _video(wan_subject)
    fp8, pipe = _video(wan_subject, "float8")
    assert _close(fp8, bf16) and not torch.equal(fp8, bf16)
    layer = next(iter(pipe.subject.layers.values()))
    assert layer.base_layer.weight.dtype == torch.float8_e4m3fn  # stored so
    assert layer.lora_A["subject"].weight.dtype == torch.bfloat16  # the LoRA in its own
    norms = [p for n, p in pipe.model.unet.named_parameters() if "norm" in n]
    assert norms and all(p.dtype == torch.bfloat16 for p in norms)  # diffusers' skips


def test_with_float8_weights_the_lora_is_folded_as_each_layer_runs(wan_subject, monkeypatch):
    import customcrafter.subject.folding as folding

    def no_kept_copies(*args, **kwargs):
        raise AssertionError("folding into float8 weights would lose the LoRA")

    made = []

    class Recorded(folding.FoldedAsRun):
        def __init__(self, module):
            super().__init__(module)
            made.append(self)

    monkeypatch.setattr(folding, "FoldedWeights", no_kept_copies)
    monkeypatch.setattr(folding, "FoldedAsRun", Recorded)
    fp8, pipe = _video(wan_subject, "float8")
    # the cross-attention's keys and values see 16 text tokens: folded (tiny-wan's 24-wide
    # layers fold from 8 tokens); the self-attention sees a 16x16 video's 2: beside
    assert made[0].folds == 2 * 2 * 4 * 2  # blocks x layers x steps x guidance branches
    beside, _ = _video(wan_subject, "float8", fold_lora=False)
    assert _close(fp8, beside) and (fp8 - beside).abs().mean() < 1e-3
    sampler = {k: v for k, v in SETTINGS.items() if k != "k"}
    off = pipe("a sks dog", schedule=DynamicWeightSchedule.off(), progress=False, **sampler)
    assert not torch.equal(fp8, off.videos)  # the module acts, at its scheduled weights
    stored = [p for p in pipe.model.unet.parameters() if p.dtype == torch.float8_e4m3fn]
    assert stored and all(p.dtype == torch.float8_e4m3fn for p in stored)  # never written
    modules = dict(pipe.model.unet.named_modules())
    assert all(modules[n] is layer for n, layer in pipe.subject.layers.items())  # put back


def _trained(tmp_path, instance_dir, class_dir, name, weights_dtype, losses=None):
    config = _config(
        tmp_path, instance_dir, class_dir, name, **WAN_TRAINING, identifier="sks",
        instance_prompt="video of a sks dog", max_train_steps=3, checkpointing_steps=3,
        mixed_precision="bf16", weights_dtype=weights_dtype, train_frames=1,
    )  # fmt: skip

    def record(step, total, logs):
        if losses is not None:
            losses.append(logs["loss"])

    return train(config, progress=False, callback=record)


def test_float8_training_moves_the_lora_and_the_loss_like_bf16(tmp_path, instance_dir, class_dir):
    losses_bf16, losses_fp8 = [], []
    bf16 = _trained(tmp_path, instance_dir, class_dir, "bf16", None, losses_bf16)
    fp8 = _trained(tmp_path, instance_dir, class_dir, "fp8", "float8", losses_fp8)
    # the loss at each step within 5% of bf16's (measured: under 0.1%; the cosine of the
    # two LoRA movements 0.993, their sizes within 0.1%)
    for a, b in zip(losses_bf16, losses_fp8, strict=True):
        assert abs(a - b) <= 0.05 * abs(a), (losses_bf16, losses_fp8)
    with safe_open(str(bf16), "pt") as a, safe_open(str(fp8), "pt") as b:
        assert set(a.keys()) == set(b.keys())  # the same format
        meta_a = json.loads(a.metadata()["customcrafter"])
        meta_b = json.loads(b.metadata()["customcrafter"])
        assert set(meta_a) == set(meta_b) and meta_b["training"]["weights_dtype"] == "float8"
        # B starts at 0: what training moved, in the same direction and by as much
        keys = sorted(k for k in a.keys() if "lora_B" in k)
        moved_a = torch.cat([a.get_tensor(k).flatten() for k in keys])
        moved_b = torch.cat([b.get_tensor(k).flatten() for k in keys])
    cosine = torch.nn.functional.cosine_similarity(moved_a, moved_b, dim=0)
    assert cosine > 0.95 and 0.8 < moved_b.norm() / moved_a.norm() < 1.25, cosine


def test_a_subject_trained_in_float8_samples_in_bf16_and_back(tmp_path, instance_dir, class_dir):
    fp8 = _trained(tmp_path, instance_dir, class_dir, "fp8", "float8")
    bf16 = _trained(tmp_path, instance_dir, class_dir, "bf16", None)
    for subject in (fp8, bf16):
        plain, _ = _video(subject)
        stored, _ = _video(subject, "float8")
        assert _close(stored, plain)


def test_generate_and_train_take_the_flag(tmp_path, wan_subject, instance_dir, capsys):
    out = tmp_path / "v.mp4"
    argv = ["-q", "generate", "--subject", str(wan_subject), "--prompt", "a sks dog", "--out"]
    settings = ["--steps", "4", "--k", "2", "--num-frames", "5", "--dtype", "bfloat16"]
    assert main([*argv, str(out), *settings, "--weights-dtype", "float8"]) == 0
    assert out.is_file()
    assert main([*argv, str(tmp_path / "w.mp4"), "--weights-dtype", "float16"]) == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_one_process_trains_again_with_another_mixed_precision(tmp_path, instance_dir, class_dir):
    """The app learns subject after subject in one process: accelerate refuses a second
    precision unless its state starts anew."""
    for name, precision in (("a", "no"), ("b", "bf16"), ("c", "no")):
        config = _config(tmp_path, instance_dir, class_dir, name, max_train_steps=1,
                         mixed_precision=precision)  # fmt: skip
        assert train(config, progress=False).is_file()


def test_the_text_encoder_in_float8_encodes_close_to_bf16(wan_subject):
    """UMT5's ``wo`` casts its input to its weight's dtype: it stays in bf16 (transformers'
    ``_keep_in_fp32_modules``), the other linear layers go to float8."""
    pipe = CustomCrafterPipeline.from_pretrained(
        subject=wan_subject, dtype=torch.bfloat16, text_encoder_dtype="float8"
    )
    encoder = pipe.model.text_encoder
    stored = {n for n, m in encoder.named_modules() if getattr(m, "weight", None) is not None
              and m.weight.dtype == torch.float8_e4m3fn}  # fmt: skip
    assert stored and not any(n.endswith(".wo") for n in stored)
    bf16, _ = _video(wan_subject)
    fp8 = pipe("a sks dog", progress=False, **SETTINGS).videos
    assert torch.isfinite(fp8).all() and _close(fp8, bf16)


def test_float8_weights_on_the_videocrafter2_unet_sample_close_to_bf16():
    """The VideoCrafter2 UNet (the shapes model is one) takes its compute dtype from its
    norms, not from a weight that may be float8."""
    from customcrafter.models.registry import load_base_model

    videos = []
    for weights in (None, "float8"):
        model = load_base_model("shapes")
        model.store(weights, None, torch.bfloat16) if weights else model.to(dtype=torch.bfloat16)
        pipe = CustomCrafterPipeline(model)
        generator = torch.Generator().manual_seed(0)
        out = pipe("a red square moving right", num_inference_steps=4, k=2, generator=generator,
                   progress=False)  # fmt: skip
        videos.append(out.videos)
    bf16, fp8 = videos
    assert torch.isfinite(fp8).all() and not torch.equal(fp8, bf16)
    assert (fp8 - bf16).abs().mean() < 0.02  # measured: 0.008 (max 0.09)


def test_float8_training_of_a_unet_with_checkpointing_keeps_its_convolutions(
    tmp_path, instance_dir, class_dir
):
    """A convolution's weight is what autograd keeps for the backward pass; cast back to
    float8 in place after the layer ran, a checkpoint's recomputation would not match."""
    from customcrafter.models.registry import build_tiny_t2v

    model = build_tiny_t2v()
    config = _config(tmp_path, instance_dir, class_dir, max_train_steps=2, checkpointing_steps=2,
                     mixed_precision="bf16", weights_dtype="float8", gradient_checkpointing=True)  # fmt: skip
    assert train(config, model=model, progress=False).is_file()
    kinds = {type(m) for m in model.unet.modules() if getattr(m, "weight", None) is not None
             and m.weight.dtype == torch.float8_e4m3fn}  # fmt: skip
    assert torch.nn.Linear in kinds and torch.nn.Conv2d not in kinds
