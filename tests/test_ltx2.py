"""LTX-2 (video with sound) as a base, on tiny components of the real diffusers classes built
in code: sampling equal to diffusers' pipeline (video and sound, plain guidance and the
pipeline's own terms), the sound in the mp4, the presets on the video stream only, training
(a learnt token, an identifier, prior preservation, resume), DWVS, the probe, export into
``LTX2Pipeline.load_lora_weights``, the memory levers."""

import numpy as np
import pytest
import torch
from conftest import identifier_subject, train_tiny
from safetensors.torch import load_file

from customcrafter.cli import main
from customcrafter.io.video import read_audio, read_video
from customcrafter.models import load_base_model
from customcrafter.models.ltx2 import TINY_TEXT_LENGTH, build_tiny_ltx2
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject import SpatialSubjectModule
from customcrafter.subject.export import export_subject
from customcrafter.subject.targets import resolve_targets

SIZE = dict(num_frames=9, height=32, width=32, num_inference_steps=3)
#: the pipeline's guidance terms off: plain classifier-free guidance, ours by default
PLAIN = dict(stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=None,
             audio_stg_scale=None, audio_modality_scale=None, audio_guidance_rescale=None)  # fmt: skip


def _theirs(pipe, prompt, negative, **guidance):
    out = pipe(prompt, negative_prompt=negative, generator=torch.Generator().manual_seed(3),
               frame_rate=24.0, guidance_scale=3.0, output_type="pt",
               max_sequence_length=TINY_TEXT_LENGTH, **{**PLAIN, **guidance}, **SIZE)  # fmt: skip
    return out.frames.permute(0, 2, 1, 3, 4), out.audio


def test_sampling_equals_the_diffusers_pipeline_video_and_sound():
    """Same components, prompt, seed and scheduler, plain classifier-free guidance: the same
    video and the same sound (the pipeline combines its branches as clean estimates, this
    project as velocities: equal up to float32 rounding)."""
    model = build_tiny_ltx2()
    pipe = model.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    video, audio = _theirs(pipe, "a dog running", model.defaults.negative_prompt)
    ours = CustomCrafterPipeline(model)("a dog running", seed=3, progress=False, **SIZE)
    assert ours.videos.shape == video.shape == (1, 3, 9, 32, 32)
    assert ours.audio.shape == audio.shape and ours.sample_rate == 16000
    torch.testing.assert_close(ours.videos, video, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.audio, audio.float(), atol=1e-5, rtol=0)
    assert audio.abs().max() > 1e-3  # a sound, not silence


def test_the_pipelines_own_guidance_terms_equal_it_given_the_same_values():
    terms = dict(stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7,
                 audio_guidance_scale=7.0, audio_stg_scale=0.5)  # fmt: skip
    model = build_tiny_ltx2()
    pipe = model.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    negative = model.defaults.negative_prompt
    video, audio = _theirs(pipe, "a dog running", negative, **terms,
                           spatio_temporal_guidance_blocks=[1])  # fmt: skip
    plain, _ = _theirs(pipe, "a dog running", negative)
    ours = CustomCrafterPipeline(model)("a dog running", seed=3, progress=False, **terms,
                                        spatio_temporal_guidance_blocks="1", **SIZE)  # fmt: skip
    torch.testing.assert_close(ours.videos, video, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.audio, audio.float(), atol=1e-5, rtol=0)
    assert (video - plain).abs().max() > 1e-2  # the terms are live


def test_guidance_terms_are_checked_and_refused_on_other_bases(tmp_path, capsys):
    model = build_tiny_ltx2()
    with pytest.raises(Exception, match="blocks 0 to 1"):
        CustomCrafterPipeline(model)("a dog", stg_scale=1.0, progress=False, **SIZE)
    out = tmp_path / "v.mp4"
    argv = ["-q", "generate", "--base", "tiny", "--no-subject", "--prompt", "a dog", "--out",
            str(out), "--steps", "2", "--stg-scale", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert "--stg-scale: guidance of LTX-2's pipeline" in capsys.readouterr().err
    assert not out.exists()


def test_generate_writes_the_sound_into_the_mp4(tmp_path):
    out = tmp_path / "v.mp4"
    argv = ["-q", "generate", "--base", "tiny-ltx2", "--no-subject", "--prompt", "a dog",
            "--out", str(out), "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert read_video(out).shape == (9, 32, 32, 3)
    samples, rate = read_audio(out)
    assert rate == 16000 and samples.shape[0] == 2  # the vocoder's stereo
    assert np.abs(samples).max() > 1e-4
    assert read_audio(_plain_mp4(tmp_path)) is None


def test_a_prompt_file_writes_the_sound_of_each_video(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog running\na cat\n")
    argv = ["-q", "generate", "--base", "tiny-ltx2", "--no-subject", "--prompts", str(prompts),
            "--output-dir", str(tmp_path / "out"), "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    videos = sorted((tmp_path / "out").glob("*.mp4"))
    assert len(videos) == 2
    sounds = [read_audio(v) for v in videos]
    assert all(s is not None and s[1] == 16000 for s in sounds)
    assert not np.array_equal(sounds[0][0], sounds[1][0])  # each video's own sound


def _plain_mp4(tmp_path):
    out = tmp_path / "plain.mp4"
    argv = ["-q", "generate", "--base", "tiny", "--no-subject", "--prompt", "a dog", "--out",
            str(out), "--steps", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_the_presets_take_the_video_streams_attention_only():
    model = load_base_model("tiny-ltx2")
    for preset in ("spatial-qkv", "spatial-cross-kv", "spatial-cross-qkv"):
        targets = resolve_targets(model, preset)
        assert targets and all(t.split(".")[2] in ("attn1", "attn2") for t in targets), targets
    assert resolve_targets(model, "spatial-qkv")[:3] == [
        f"transformer_blocks.0.attn1.to_{p}" for p in "qkv"
    ]
    override = resolve_targets(model, override=["audio_attn1.to_q"])  # the rest by name
    assert override == [
        "transformer_blocks.0.audio_attn1.to_q",
        "transformer_blocks.1.audio_attn1.to_q",
    ]


def _train(tmp_path, name, *extra):
    return train_tiny(tmp_path, "tiny-ltx2", name, *extra)


def test_a_learnt_token_trains_and_resumes_exactly(tmp_path):
    token = ["--instance-prompt", "video of a <new1> dog", "--prior-loss-weight", "0"]
    straight = _train(tmp_path, "a", *token, "--max-train-steps", "4")
    _train(tmp_path, "b", *token, "--max-train-steps", "2")
    resumed = _train(tmp_path, "b", *token, "--max-train-steps", "4",
                     "--resume-from-checkpoint", "latest")  # fmt: skip
    assert straight.keys() == resumed.keys() and "token_embeddings" in straight
    assert straight["token_embeddings"].shape == (1, 32)  # a row of Gemma's vocabulary
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-7), key
    assert any(float(v.abs().max()) > 0 for k, v in straight.items() if "lora_B" in k)
    assert not any("audio" in k for k in straight)


def test_the_learnt_token_starts_from_its_words_looked_up_embedding():
    """Gemma's table scales what it looks up by sqrt(width): a new token starts as the
    initializer word's embedding as the encoder sees it."""
    model = build_tiny_ltx2()
    table = model.token_embedding()
    ids = model.tokenizer("dog", add_special_tokens=False).input_ids
    looked_up = table(torch.tensor([ids])).mean(1)[0]
    SpatialSubjectModule.create(model, {"<new1>": "dog"})
    (new,) = model.token_embedding().new_embeddings
    torch.testing.assert_close(new, looked_up)


def test_an_identifier_with_prior_preservation_trains_and_samples_under_dwvs(tmp_path):
    _train(tmp_path, "s", "--instance-prompt", "video of a sks dog", "--identifier", "sks",
           "--class-prompt", "video of a dog", "--num-class-images", "2",
           "--class-sampling-steps", "2", "--max-train-steps", "2")  # fmt: skip
    pipe = CustomCrafterPipeline.from_pretrained(subject=str(tmp_path / "s"), device="cpu")
    settings = dict(seed=0, schedule=DynamicWeightSchedule(0.4, 0.8, 1), progress=False, **SIZE)
    folded = pipe("a sks dog running", **settings)
    unfolded = pipe("a sks dog running", fold_lora=False, **settings)
    assert torch.allclose(folded.videos, unfolded.videos, atol=1e-5)
    assert torch.allclose(folded.audio, unfolded.audio, atol=1e-5)
    assert folded.weights == [0.4, 0.8, 0.8]


def test_the_commitment_probe_runs(tmp_path):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(
        "- {attribute: motion, first: a dog running left, then: a dog running right}\n"
    )
    argv = ["-q", "probe", "commitment", "--base", "tiny-ltx2", "--pairs", str(pairs),
            "--grid", "1", "--samples", "1", "--steps", "3", "--device", "cpu",
            "--output-dir", str(tmp_path / "probe")]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "probe" / "commitment.json").is_file()


def _subject_with_random_lora(tmp_path):
    return identifier_subject(tmp_path / "subject.safetensors", 0.5, build_tiny_ltx2())


@pytest.mark.parametrize("fmt", ["comfyui", "diffusers"])
def test_an_exported_lora_in_ltx2_pipeline_gives_our_video_at_weight_1(tmp_path, fmt):
    path = _subject_with_random_lora(tmp_path)
    out = export_subject(path, tmp_path / f"{fmt}.safetensors", fmt)
    keys = set(load_file(str(out)))
    if fmt == "comfyui":
        assert "diffusion_model.transformer_blocks.1.attn1.to_q.lora_A.weight" in keys
        assert not any(k.endswith(".alpha") for k in keys)
    else:
        assert "transformer.transformer_blocks.1.attn1.to_q.lora_B.weight" in keys
    prompt = "a sks dog running"
    ours = CustomCrafterPipeline.from_pretrained(subject=path)(
        prompt, schedule=DynamicWeightSchedule.constant(1.0), seed=3, progress=False, **SIZE
    )
    pipe = build_tiny_ltx2().to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(out), adapter_name="subject")
    video, audio = _theirs(pipe, prompt, build_tiny_ltx2().defaults.negative_prompt)
    plain = CustomCrafterPipeline(build_tiny_ltx2())(prompt, seed=3, progress=False, **SIZE)
    assert (ours.videos - plain.videos).abs().max() > 1e-2  # the LoRA matters
    torch.testing.assert_close(ours.videos, video, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.audio, audio.float(), atol=1e-5, rtol=0)


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
        videos.append(pipe("a sks dog running", fold_lora=False, **settings).videos)
    assert torch.equal(*videos)
    fp8 = _train(tmp_path, "fp8", *ident, "--weights-dtype", "float8", "--mixed-precision", "bf16")
    assert any(float(v.abs().max()) > 0 for k, v in fp8.items() if "lora_B" in k)


def test_static_clips_train_without_the_input_cache(tmp_path):
    """A photo repeated into a 9-frame static clip (two latent frames), the VAE and the text
    encoder run every step instead of once."""
    tensors = _train(tmp_path, "s", "--instance-prompt", "video of a <new1> dog",
                     "--prior-loss-weight", "0", "--max-train-steps", "2", "--no-cache-inputs",
                     "--train-frames", "9", "--no-augment")  # fmt: skip
    assert any(float(v.abs().max()) > 0 for k, v in tensors.items() if "lora_B" in k)


def test_training_gives_the_sound_stream_fresh_noise_each_step():
    """Photos have no sound: the audio stream is pure noise at the highest noise level,
    drawn from the step's timesteps (the same again for the same step), and only the
    video's prediction comes back."""
    model = build_tiny_ltx2()
    context = model.encode_prompts(["a dog"])
    latents = torch.randn(1, 4, 1, 1, 1)
    seen = []
    model.unet.audio_proj_in.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    timestep = model.unet.audio_time_embed.register_forward_hook(
        lambda m, args, out: seen.append(args[0])
    )
    out = model.predict(latents, torch.tensor([500.0]), context, 24)
    assert out.shape == latents.shape
    model.predict(latents, torch.tensor([500.0]), context, 24)
    model.predict(latents, torch.tensor([501.0]), context, 24)
    timestep.remove()
    (a1, t1), (a2, _), (a3, _) = [(seen[i], seen[i + 1]) for i in (0, 2, 4)]
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert t1.tolist() == [1000.0]
    # an LTX-2.0 transformer (no prompt modulation): the legacy cross-modal timesteps
    assert model.use_cross_timestep is False


def test_switch_sigma_switches_where_the_shifted_noise_level_falls_below_it(tmp_path):
    """``--switch-sigma`` reads the sampler's noise levels at the size being sampled (LTX-2
    shifts them by the video's token count)."""
    pipe = CustomCrafterPipeline.from_pretrained(subject=_subject_with_random_lora(tmp_path))
    sampler = pipe.model.make_sampler((SIZE["num_frames"], SIZE["height"], SIZE["width"]))
    sampler.set_timesteps(4)
    sigmas = sampler.noise_levels()
    switch = (sigmas[1] + sigmas[2]) / 2
    settings = dict(SIZE, num_inference_steps=4)
    schedule = DynamicWeightSchedule(0.4, 0.8, 1, switch_sigma=switch)
    out = pipe("a sks dog", schedule=schedule, progress=False, **settings)
    assert out.weights == [0.4, 0.4, 0.8, 0.8]
