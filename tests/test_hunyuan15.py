"""HunyuanVideo 1.5 as a base, on tiny components of the real diffusers classes built in
code: sampling equal to diffusers' pipeline, the presets on its double-stream blocks,
training (a learnt token, an identifier, prior preservation, resume), DWVS, the probe."""

import json

import pytest
import torch
from conftest import identifier_subject, train_tiny
from safetensors.torch import load_file

from customcrafter.cli import main
from customcrafter.io.video import read_video
from customcrafter.models import load_base_model
from customcrafter.models.hunyuan15 import HunyuanVideo15Model, build_tiny_hunyuan15_pipeline
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject.export import export_subject
from customcrafter.subject.targets import resolve_targets

SIZE = dict(num_frames=5, height=32, width=32, num_inference_steps=3)


@pytest.mark.parametrize(
    "prompt, negative",
    [("a dog running", None), ('a dog holding a sign that says "hello"', "blurry")],
)
def test_sampling_equals_the_diffusers_pipeline(prompt, negative):
    """Same components, prompt, seed and scheduler: the same video, number for number (the
    second prompt quotes text: ByT5 encodes it for the glyph stream)."""
    pipe = build_tiny_hunyuan15_pipeline()
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt, negative_prompt=negative, generator=torch.Generator().manual_seed(3),
                  output_type="pt", **SIZE).frames.permute(0, 2, 1, 3, 4)  # fmt: skip
    model = HunyuanVideo15Model.from_pipeline(pipe)
    ours = CustomCrafterPipeline(model)(
        prompt, seed=3, negative_prompt=negative or "", progress=False, **SIZE
    )
    assert ours.videos.shape == theirs.shape
    assert torch.equal(ours.videos, theirs)


def test_the_context_holds_both_encoders_and_their_masks():
    model = load_base_model("tiny-hunyuan15")
    ids = model.tokenize(["a dog", 'a sign that says "hi"'])
    assert ids.shape == (2, model.max_text_length)
    assert (ids[0, -256:] == -1).all() and (ids[1, -256:] >= 0).all()
    context = model.encode_text(ids)
    text, mask, glyph, glyph_mask = model._unpack(context)
    assert text.shape == (2, 1000, 32) and glyph.shape == (2, 256, 16)
    assert mask[0].sum() > 0 and glyph_mask[0].sum() == 0 and glyph_mask[1].sum() > 0
    assert glyph[0].abs().sum() == 0


def test_generate_takes_the_tiny_model(tmp_path):
    out = tmp_path / "v.mp4"
    argv = ["-q", "generate", "--base", "tiny-hunyuan15", "--no-subject", "--prompt", "a dog",
            "--out", str(out), "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert read_video(out).shape == (5, 32, 32, 3)


def test_the_presets_take_the_video_tokens_attention_and_the_text_keys_and_values():
    model = load_base_model("tiny-hunyuan15")
    block = "transformer_blocks.0.attn."
    names = {p: [t.removeprefix(block) for t in resolve_targets(model, p)] for p in
             ("spatial-qkv", "spatial-cross-kv", "spatial-cross-qkv")}  # fmt: skip
    assert names["spatial-qkv"] == ["to_q", "to_k", "to_v", "add_k_proj", "add_v_proj"]
    assert names["spatial-cross-kv"] == ["add_k_proj", "add_v_proj"]
    assert names["spatial-cross-qkv"] == ["to_q", "add_k_proj", "add_v_proj"]
    override = resolve_targets(model, override=["attn.add_q_proj"])  # the rest by name
    assert override == [block + "add_q_proj"]


def _train(tmp_path, name, *extra):
    return train_tiny(tmp_path, "tiny-hunyuan15", name, *extra)


def test_a_learnt_token_trains_and_resumes_exactly(tmp_path):
    token = ["--instance-prompt", "video of a <new1> dog", "--prior-loss-weight", "0"]
    straight = _train(tmp_path, "a", *token, "--max-train-steps", "4")
    _train(tmp_path, "b", *token, "--max-train-steps", "2")
    resumed = _train(tmp_path, "b", *token, "--max-train-steps", "4",
                     "--resume-from-checkpoint", "latest")  # fmt: skip
    assert straight.keys() == resumed.keys() and "token_embeddings" in straight
    assert straight["token_embeddings"].shape == (1, 32)  # a row of Qwen's vocabulary
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-7), key
    assert any(float(v.abs().max()) > 0 for k, v in straight.items() if "lora_B" in k)


def test_an_identifier_with_prior_preservation_trains_and_samples_under_dwvs(tmp_path):
    _train(tmp_path, "s", "--instance-prompt", "video of a sks dog", "--identifier", "sks",
           "--class-prompt", "video of a dog", "--num-class-images", "2",
           "--class-sampling-steps", "2", "--max-train-steps", "2")  # fmt: skip
    pipe = CustomCrafterPipeline.from_pretrained(subject=str(tmp_path / "s"), device="cpu")
    settings = dict(seed=0, schedule=DynamicWeightSchedule(0.4, 0.8, 1), progress=False, **SIZE)
    folded = pipe("a sks dog running", **settings)
    unfolded = pipe("a sks dog running", fold_lora=False, **settings)
    assert torch.allclose(folded.videos, unfolded.videos, atol=1e-5)
    assert folded.weights == [0.4, 0.8, 0.8]


def test_the_commitment_probe_runs(tmp_path):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        "- {attribute: motion, first: a dog running left, then: a dog running right}\n"
    )
    argv = ["-q", "probe", "commitment", "--base", "tiny-hunyuan15", "--pairs", str(pairs),
            "--grid", "1", "--samples", "1", "--steps", "3", "--device", "cpu",
            "--output-dir", str(tmp_path / "probe")]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "probe" / "commitment.json").is_file()


def test_a_comfyui_export_fuses_each_streams_q_k_v_as_comfyui_holds_them(tmp_path):
    """ComfyUI's HunyuanVideo blocks have one ``qkv`` layer per stream: the file's LoRA of
    ``img_attn.qkv`` is the video tokens' q, k, v LoRAs in its thirds of the rows, that of
    ``txt_attn.qkv`` the text tokens' k and v (its q third zero), exactly."""
    path = _subject_with_random_lora(tmp_path)
    comfy = load_file(str(export_subject(path, tmp_path / "c.safetensors", "comfyui")))
    plain = load_file(str(export_subject(path, tmp_path / "d.safetensors", "diffusers")))
    assert not any(k.endswith(".alpha") for k in comfy)
    for block in (0,):
        for stream, parts in (("img", ("to_q", "to_k", "to_v")),
                              ("txt", (None, "add_k_proj", "add_v_proj"))):  # fmt: skip
            name = f"diffusion_model.double_blocks.{block}.{stream}_attn.qkv"
            fused = comfy[f"{name}.lora_B.weight"] @ comfy[f"{name}.lora_A.weight"]
            rows = fused.shape[0] // 3
            for third, part in enumerate(parts):
                got = fused[third * rows : (third + 1) * rows]
                if part is None:
                    assert not got.any()
                    continue
                key = f"transformer.transformer_blocks.{block}.attn.{part}"
                want = plain[f"{key}.lora_B.weight"] @ plain[f"{key}.lora_A.weight"]
                torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert {k.rsplit(".", 2)[0] for k in comfy} == {
        "diffusion_model.double_blocks.0.img_attn.qkv",
        "diffusion_model.double_blocks.0.txt_attn.qkv",
    }


def _subject_with_random_lora(tmp_path):
    return identifier_subject(
        tmp_path / "subject.safetensors", 0.5, load_base_model("tiny-hunyuan15")
    )


def test_the_release_is_planned(capsys):
    """The 480p release without its files: 8.33 B transformer parameters; its VAE decodes in
    tiles (whole, the decode would set the peak)."""
    argv = ["plan", "--base", "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
            "--task", "generate", "--vram", "80", "--json"]  # fmt: skip
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] and round(plan["parameters"]["transformer"] / 1e9, 2) == 8.33
    assert plan["size"] == {"height": 480, "width": 848, "num_frames": 121}
    assert plan["phases_gb"]["decode"] < plan["phases_gb"]["denoise"]


def test_a_diffusers_export_in_the_pipelines_transformer_gives_our_video_at_weight_1(tmp_path):
    """``HunyuanVideo15Pipeline`` has no ``load_lora_weights``; its transformer's
    ``load_lora_adapter`` reads the file."""
    path = _subject_with_random_lora(tmp_path)
    out = export_subject(path, tmp_path / "lora.safetensors", "diffusers")
    assert "transformer.transformer_blocks.0.attn.add_k_proj.lora_A.weight" in load_file(str(out))
    prompt = "a sks dog running"
    ours = CustomCrafterPipeline.from_pretrained(subject=path)(
        prompt, schedule=DynamicWeightSchedule.constant(1.0), seed=3, progress=False, **SIZE
    ).videos
    pipe = build_tiny_hunyuan15_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.load_lora_adapter(str(out), prefix="transformer", adapter_name="subject")
    theirs = pipe(prompt, generator=torch.Generator().manual_seed(3), output_type="pt",
                  **SIZE).frames.permute(0, 2, 1, 3, 4)  # fmt: skip
    assert theirs.shape == ours.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    plain = CustomCrafterPipeline(load_base_model("tiny-hunyuan15"))
    base = plain(prompt, seed=3, progress=False, **SIZE).videos
    assert (ours - base).abs().max() > 1e-2  # the LoRA matters


def test_offloaded_blocks_change_nothing_and_float8_trains(tmp_path):
    """Block offload: the same video and the same trained module as without; float8 frozen
    weights: training runs (bf16 compute) and moves the module."""
    ident = ["--instance-prompt", "video of a sks dog", "--identifier", "sks",
             "--prior-loss-weight", "0", "--max-train-steps", "2", "--gradient-checkpointing"]  # fmt: skip
    plain = _train(tmp_path, "plain", *ident)
    streamed = _train(tmp_path, "streamed", *ident, "--offload-blocks", "1")
    assert all(torch.equal(plain[k], streamed[k]) for k in plain)
    settings = dict(seed=0, schedule=DynamicWeightSchedule(0.4, 0.8, 1), progress=False, **SIZE)
    videos = []
    for blocks in (0, 1):
        pipe = CustomCrafterPipeline.from_pretrained(
            subject=str(tmp_path / "plain"), device="cpu", offload_blocks=blocks or None
        )
        # (unfolded both times: offloaded blocks never fold the LoRA into their weights)
        videos.append(pipe("a sks dog running", fold_lora=False, **settings).videos)
    assert torch.equal(*videos)
    fp8 = _train(tmp_path, "fp8", *ident, "--weights-dtype", "float8", "--mixed-precision", "bf16")
    assert any(float(v.abs().max()) > 0 for k, v in fp8.items() if "lora_B" in k)


def test_static_clips_train_without_the_input_cache(tmp_path):
    """A photo repeated into a 5-frame static clip (two latent frames), the VAE and both
    text encoders run every step instead of once. (No augmentation: on a 2x2-latent toy
    video a shrunken photo covers no whole latent cell, and its loss mask would be empty.)"""
    tensors = _train(tmp_path, "s", "--instance-prompt", "video of a <new1> dog",
                     "--prior-loss-weight", "0", "--max-train-steps", "2", "--no-cache-inputs",
                     "--train-frames", "5", "--no-augment")  # fmt: skip
    assert any(float(v.abs().max()) > 0 for k, v in tensors.items() if "lora_B" in k)
