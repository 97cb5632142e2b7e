"""Wan as a base model, on tiny components of the real diffusers classes built in code."""

import json
from pathlib import Path

import pytest
import torch
from conftest import identifier_subject
from safetensors.torch import load_file
from test_training import _config

from customcrafter.cli import main
from customcrafter.errors import UserError
from customcrafter.models import build_tiny_t2v, load_base_model
from customcrafter.models.samplers import FlowMatchingSampler
from customcrafter.models.wan import (
    WAN_NEGATIVE_PROMPT,
    WanModel,
    build_tiny_tokenizer,
    build_tiny_wan,
)
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject import SpatialSubjectModule, read_metadata
from customcrafter.subject.export import export_subject
from customcrafter.subject.targets import resolve_targets
from customcrafter.training import train

PROMPT, NEGATIVE = "a dog running on the beach", "static"
#: test_training._config on the tiny Wan at its size
WAN_TRAINING = dict(base="tiny-wan", height=16, width=16)
SETTINGS = dict(height=16, width=16, num_frames=9, num_inference_steps=4, guidance_scale=5.0)


def _diffusers_video(model: WanModel, seed: int, **extra) -> torch.Tensor:
    frames = model.to_pipeline()(
        PROMPT,
        **extra,
        negative_prompt=NEGATIVE,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        max_sequence_length=model.max_sequence_length,
        **SETTINGS,
    ).frames
    return frames.permute(0, 2, 1, 3, 4)  # [b, f, 3, h, w] -> [b, 3, f, h, w]


@pytest.mark.parametrize(
    "two_experts,scheduler", [(False, "unipc"), (False, "euler"), (True, "unipc")]
)
def test_sampling_equals_diffusers_wan_pipeline_number_for_number(two_experts, scheduler):
    model = build_tiny_wan(two_experts=two_experts, scheduler=scheduler)
    ours = CustomCrafterPipeline(model)(
        PROMPT, negative_prompt=NEGATIVE, seed=3, progress=False, **SETTINGS
    ).videos
    assert torch.equal(ours, _diffusers_video(model, 3))


def test_the_two_experts_split_the_steps_at_the_boundary():
    model = build_tiny_wan(two_experts=True)
    seen = {"high": [], "low": []}
    model.unet.register_forward_hook(
        lambda m, a, k, o: seen["high"].append(k["timestep"][0]), with_kwargs=True
    )
    model.transformer_2.register_forward_hook(
        lambda m, a, k, o: seen["low"].append(k["timestep"][0]), with_kwargs=True
    )
    CustomCrafterPipeline(model)(PROMPT, seed=0, progress=False, **SETTINGS)
    boundary = model.boundary_ratio * model.num_train_timesteps
    assert seen["high"] and seen["low"]
    assert all(t >= boundary for t in seen["high"]) and all(t < boundary for t in seen["low"])


def test_frames_must_be_4n_plus_1_and_sizes_fit_the_patches():
    pipe = CustomCrafterPipeline(build_tiny_wan())
    with pytest.raises(UserError, match=r"4n\+1 frames .* got 8; use 5 or 9"):
        pipe(PROMPT, num_frames=8, height=16, width=16, progress=False)
    with pytest.raises(UserError, match="multiples of 16"):
        pipe(PROMPT, num_frames=5, height=24, width=16, progress=False)


def test_a_wan_folder_loads_by_its_path_and_another_folder_is_refused(tmp_path):
    model = build_tiny_wan(two_experts=True)
    model.to_pipeline().save_pretrained(tmp_path / "wan")
    loaded = load_base_model(str(tmp_path / "wan"))
    assert isinstance(loaded, WanModel) and loaded.boundary_ratio == 0.875
    assert loaded.transformer_2 is not None
    assert loaded.defaults.num_frames == 81 and loaded.defaults.num_inference_steps == 40
    assert (loaded.defaults.height, loaded.defaults.width) == (720, 1280)
    assert loaded.defaults.negative_prompt == WAN_NEGATIVE_PROMPT
    build_tiny_wan().to_pipeline().save_pretrained(tmp_path / "wan21")
    one = load_base_model(f"wan:{tmp_path / 'wan21'}")
    assert one.transformer_2 is None and one.defaults.num_inference_steps == 50
    assert (one.defaults.num_frames, one.defaults.height, one.defaults.width) == (81, 480, 832)
    latents = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    context = torch.zeros(1, 16, 32)
    for t in (999, 100):  # both experts came back, with equal weights
        timesteps = torch.tensor([t])
        torch.testing.assert_close(  # equal up to float32 rounding of the reloaded tensors
            loaded.predict(latents, timesteps, context, 16),
            model.predict(latents, timesteps, context, 16),
            atol=1e-6,
            rtol=0,
        )
    for name in ("unet", "transformer_2", "vae", "text_encoder"):
        ours, theirs = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(v, theirs[k]) for k, v in ours.items()), name
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UserError, match="not a diffusers Wan folder"):
        load_base_model(f"wan:{other}")


def test_prompts_are_encoded_as_wan_pipeline_pads_them():
    model = build_tiny_wan()
    ours = model.encode_prompts([PROMPT, "a cat"])
    theirs, _ = model.to_pipeline().encode_prompt(
        [PROMPT, "a cat"], do_classifier_free_guidance=False, max_sequence_length=16
    )
    assert torch.equal(ours, theirs)
    assert ours[1, 3:].abs().sum() == 0  # "a cat </s>", then zeros


def test_the_tokenizer_made_in_code_ends_prompts_and_takes_new_tokens():
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer("a dog", padding="max_length", max_length=5).input_ids
    assert ids == [3, 4, 1, 0, 0]
    tokenizer.add_tokens(["<new1>"])
    assert tokenizer.convert_tokens_to_ids("<new1>") == len(tokenizer) - 1


def test_flow_matching_noise_target_and_shifted_timesteps():
    model = build_tiny_wan()
    x0 = torch.randn(2, 16, 3, 2, 2)
    noise = torch.randn(2, 16, 3, 2, 2)
    t = torch.tensor([250.0, 750.0])
    noisy = model.add_noise(x0, noise, t)
    velocity = model.training_target(x0, noise, t)
    sigma = (t / 1000).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(noisy - sigma * velocity, x0)  # one Euler step to sigma 0
    torch.testing.assert_close(noisy + (1 - sigma) * velocity, noise)
    draws = model.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert 0 < draws.min() and draws.max() < 1000
    # shift 3: sigma = 3u / (1 + 2u), so the median u = 0.5 lands at sigma 0.75
    assert abs(draws.median().item() - 750) < 25


def test_the_sampler_is_the_models_own_and_reports_flow_sigmas():
    model = build_tiny_wan()
    sampler = model.make_sampler()
    assert isinstance(sampler, FlowMatchingSampler)
    assert type(sampler.scheduler).__name__ == "UniPCMultistepScheduler"
    sampler.set_timesteps(4)
    sigmas = sampler.noise_levels()
    assert len(sigmas) == 4 and sigmas[0] > sigmas[-1] > 0 and sigmas[0] <= 1
    with pytest.raises(UserError, match="deterministic"):
        CustomCrafterPipeline(model)(PROMPT, eta=1.0, progress=False, **SETTINGS)


def test_the_papers_preset_maps_to_attn1_and_attn2_of_every_block():
    model = build_tiny_wan()
    targets = resolve_targets(model, "spatial-qkv")
    expected = [f"blocks.{n}.{a}.{p}" for n in range(2) for a in ("attn1", "attn2") for p in "qkv"]
    assert [t.replace(".to_", ".") for t in targets] == expected
    assert resolve_targets(model, "spatial-cross-kv") == [
        f"blocks.{n}.attn2.to_{p}" for n in range(2) for p in "kv"
    ]


@pytest.mark.parametrize("frames", [1, 5])
def test_a_subject_trains_on_wan_and_samples_with_dwvs(tmp_path, instance_dir, class_dir, frames):
    model = build_tiny_wan()
    frozen = {k: v.clone() for k, v in model.unet.state_dict().items()}
    config = _config(
        tmp_path, instance_dir, class_dir, **WAN_TRAINING, max_train_steps=3, train_frames=frames
    )
    path = train(config, model=model, progress=False)
    after = model.unet.state_dict()
    for key, before in frozen.items():
        base_key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(before, after.get(key, after.get(base_key))), key
    pipe = CustomCrafterPipeline.from_pretrained(subject=path)
    assert isinstance(pipe.model, WanModel)
    schedule = DynamicWeightSchedule(0.4, 0.8, 2)
    folded = pipe("a <new1> dog running", schedule=schedule, progress=False, seed=1)
    unfolded = pipe(
        "a <new1> dog running", schedule=schedule, progress=False, seed=1, fold_lora=False
    )
    assert folded.weights == [0.4, 0.4, 0.8, 0.8]
    torch.testing.assert_close(folded.videos, unfolded.videos, atol=1e-5, rtol=0)
    with pytest.raises(UserError):
        SpatialSubjectModule.load(path, build_tiny_t2v())  # made for another base


def test_wan_training_frames_must_be_4n_plus_1(tmp_path, instance_dir, class_dir):
    config = _config(
        tmp_path, instance_dir, class_dir, **WAN_TRAINING, max_train_steps=1, train_frames=8
    )
    with pytest.raises(UserError, match=r"4n\+1"):
        train(config, model=build_tiny_wan(), progress=False)
    assert not (tmp_path / "out" / "subject.safetensors").exists()


def _subject_with_random_lora(tmp_path, model=None, identifier=None) -> Path:
    """A Wan subject module whose LoRA visibly changes the video (B drawn at random)."""
    path = tmp_path / "subject.safetensors"
    return identifier_subject(path, 0.5, model=model, identifier=identifier)


def _ours_at_weight_1(path, prompt: str) -> torch.Tensor:
    return CustomCrafterPipeline.from_pretrained(subject=path)(
        prompt,
        schedule=DynamicWeightSchedule.constant(1.0),
        negative_prompt=NEGATIVE,
        seed=2,
        progress=False,
        **SETTINGS,
    ).videos


def _wan_pipeline_video(pipe, prompt: str) -> torch.Tensor:
    return pipe(
        prompt,
        negative_prompt=NEGATIVE,
        generator=torch.Generator().manual_seed(2),
        output_type="pt",
        max_sequence_length=16,
        **SETTINGS,
    ).frames.permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("fmt", ["comfyui", "diffusers"])
def test_an_exported_lora_in_wan_pipeline_gives_our_video_at_weight_1(tmp_path, fmt):
    path = _subject_with_random_lora(tmp_path)
    out = export_subject(path, tmp_path / f"{fmt}.safetensors", fmt, drop_token=True)
    keys = set(load_file(str(out)))
    if fmt == "comfyui":
        assert "diffusion_model.blocks.1.self_attn.q.lora_A.weight" in keys
        assert "diffusion_model.blocks.0.cross_attn.v.alpha" in keys
    else:
        assert "transformer.blocks.1.attn1.to_q.lora_B.weight" in keys
    prompt = "a dog running"  # the LoRA alone: the class word, no learnt token
    ours = _ours_at_weight_1(path, prompt)
    pipe = build_tiny_wan().to_pipeline()
    pipe.load_lora_weights(str(out), adapter_name="subject")
    theirs = _wan_pipeline_video(pipe, prompt)
    plain = _diffusers_video(build_tiny_wan(), 2)
    assert (ours - plain).abs().max() > 1e-2  # the LoRA matters
    # ours folds the LoRA into the weights, diffusers runs it unfused: float32 rounding apart
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_export_refuses_a_learnt_token_another_base_and_an_existing_file(tmp_path):
    path = _subject_with_random_lora(tmp_path)
    with pytest.raises(UserError, match=r"<new1>.*cannot hold.*--drop-token"):
        export_subject(path, tmp_path / "a.safetensors", "comfyui")
    assert not (tmp_path / "a.safetensors").exists()
    export_subject(path, tmp_path / "a.safetensors", "comfyui", drop_token=True)
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        export_subject(path, tmp_path / "a.safetensors", "comfyui", drop_token=True)
    other = SpatialSubjectModule.create(build_tiny_t2v(), {"<new1>": "dog"})
    other_path = other.save(tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="not a Wan, HunyuanVideo 1.5 or LTX-2 model"):
        export_subject(other_path, tmp_path / "b.safetensors", "diffusers", drop_token=True)


def test_the_export_command_writes_the_file_and_explains_a_refusal(tmp_path, capsys):
    path = _subject_with_random_lora(tmp_path)
    out = tmp_path / "lora.safetensors"
    assert main(["export", str(path), "--format", "comfyui", "--out", str(out)]) != 0
    assert "--drop-token" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(path), "--out", str(out), "--drop-token"]) == 0
    assert "diffusion_model.blocks.0.self_attn.q.alpha" in load_file(str(out))


def test_switch_sigma_on_wan_switches_where_the_flow_sigma_falls_below_it(tmp_path):
    path = _subject_with_random_lora(tmp_path)
    pipe = CustomCrafterPipeline.from_pretrained(subject=path)
    sampler = pipe.model.make_sampler()
    sampler.set_timesteps(4)
    sigmas = sampler.noise_levels()
    switch = (sigmas[1] + sigmas[2]) / 2
    schedule = DynamicWeightSchedule(0.4, 0.8, 1, switch_sigma=switch)
    out = pipe("a <new1> dog", schedule=schedule, progress=False, **SETTINGS)
    assert out.weights == [0.4, 0.4, 0.8, 0.8]


def test_an_identifier_word_trains_no_embedding_and_exports_without_dropping(
    tmp_path, instance_dir, class_dir
):
    model = build_tiny_wan()
    vocab = len(model.tokenizer)
    table = model.token_embedding().weight.clone()
    config = _config(
        tmp_path,
        instance_dir,
        class_dir,
        **WAN_TRAINING,
        max_train_steps=2,
        train_frames=1,
        instance_prompt="video of a sks dog",
        identifier="sks",
    )
    path = train(config, model=model, progress=False)
    assert len(model.tokenizer) == vocab  # no token added
    assert torch.equal(model.token_embedding().weight, table)
    assert "token_embeddings" not in load_file(str(path))
    meta = read_metadata(path)
    assert (meta.identifier, meta.tokens, meta.format_version) == ("sks", [], 2)

    pipe = CustomCrafterPipeline.from_pretrained(subject=path)
    assert pipe.base_prompt("a sks dog running, sks.") == "a dog running, ."
    seen = []
    pipe.model.tokenize = lambda prompts, f=pipe.model.tokenize: seen.append(prompts) or f(prompts)
    schedule = DynamicWeightSchedule(0.4, 0.8, 2, delay_token=True)
    pipe("a sks dog running", schedule=schedule, progress=False, **SETTINGS)
    assert ["a dog running"] in seen and ["a sks dog running"] in seen
    with pytest.raises(UserError, match="identifier word 'sks'"):
        pipe("a <new1> dog", progress=False, **SETTINGS)

    out = export_subject(path, tmp_path / "lora.safetensors", "comfyui")  # no --drop-token
    assert main(["export", str(path), "--out", str(tmp_path / "b.safetensors")]) == 0
    assert load_file(str(out)).keys() == load_file(str(tmp_path / "b.safetensors")).keys()


@pytest.mark.parametrize(
    "prompt,identifier,error",
    [
        ("video of a <new1> dog", "sks", "one or the other"),
        ("video of a dog", "sks", "does not use the identifier"),
        ("video of a sks", "sks", "before the class word"),
        ("video of a <sks> dog", "<sks>", "one plain word"),
    ],
)
def test_a_bad_identifier_is_refused_before_loading(
    tmp_path, instance_dir, class_dir, prompt, identifier, error
):
    config = _config(
        tmp_path, instance_dir, class_dir, instance_prompt=prompt, identifier=identifier
    )
    with pytest.raises(UserError, match=error):
        train(config, model=None, progress=False)


def test_a14b_guidance_scale_2_is_the_low_noise_experts_as_in_wan_pipeline():
    model = build_tiny_wan(two_experts=True)
    ours = CustomCrafterPipeline(model)(
        PROMPT, negative_prompt=NEGATIVE, seed=3, progress=False, guidance_scale_2=2.0, **SETTINGS
    ).videos
    assert torch.equal(ours, _diffusers_video(model, 3, guidance_scale_2=2.0))
    assert not torch.equal(ours, _diffusers_video(model, 3))
    with pytest.raises(UserError, match="two-expert"):
        CustomCrafterPipeline(build_tiny_wan())(PROMPT, progress=False, guidance_scale_2=2.0)


@pytest.mark.parametrize("experts", ["high", "low", "both"])
def test_experts_chooses_where_the_module_goes_and_which_timesteps_train(
    tmp_path, instance_dir, class_dir, experts
):
    model = build_tiny_wan(two_experts=True)
    config = _config(
        tmp_path, instance_dir, class_dir, **WAN_TRAINING, max_train_steps=2, train_frames=1
    )
    config.experts = experts
    seen = {"high": [], "low": []}
    for name, expert in (("high", model.unet), ("low", model.transformer_2)):
        expert.register_forward_hook(
            lambda m, a, k, o, name=name: seen[name].append(k["timestep"]), with_kwargs=True
        )
    path = train(config, model=model, progress=False)
    targets = read_metadata(path).targets
    low = [t for t in targets if t.startswith("transformer_2.")]
    assert bool(low) == (experts != "high") and (len(low) < len(targets)) == (experts != "low")
    # training calls (with grad) run only the experts that carry the module
    boundary = model.boundary_ratio * model.num_train_timesteps
    assert all((t >= boundary).all() for t in seen["high"])
    assert all((t < boundary).all() for t in seen["low"])
    assert bool(seen["low"]) == (experts != "high")
    pipe = CustomCrafterPipeline.from_pretrained(subject=path)
    schedule = DynamicWeightSchedule(0.4, 0.8, 1)
    folded = pipe("a <new1> dog", schedule=schedule, progress=False, seed=1)
    unfolded = pipe("a <new1> dog", schedule=schedule, progress=False, seed=1, fold_lora=False)
    torch.testing.assert_close(folded.videos, unfolded.videos, atol=1e-5, rtol=0)


def test_both_experts_sample_each_experts_timesteps_in_proportion():
    model = build_tiny_wan(two_experts=True)
    generator = torch.Generator().manual_seed(0)
    boundary = model.boundary_ratio * model.num_train_timesteps
    calls = [model.sample_timesteps(4, generator) for _ in range(400)]
    assert all((c >= boundary).all() or (c < boundary).all() for c in calls)
    share = sum(bool((c >= boundary).all()) for c in calls) / len(calls)
    shift, b = model.flow_shift, model.boundary_ratio
    expected = 1 - b / (shift - (shift - 1) * b)  # P(shifted sigma >= boundary)
    assert abs(share - expected) < 0.08


def test_experts_on_a_one_expert_model_is_refused_before_anything_runs(
    tmp_path, instance_dir, class_dir
):
    config = _config(
        tmp_path, instance_dir, class_dir, **WAN_TRAINING, max_train_steps=1, train_frames=1
    )
    config.experts = "low"
    with pytest.raises(UserError, match="one denoiser"):
        train(config, model=build_tiny_wan(), progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_a14b_subject_exports_one_file_per_expert_and_loads_into_wan_pipeline(tmp_path):
    path = _subject_with_random_lora(tmp_path, build_tiny_wan(two_experts=True), "sks")
    with pytest.raises(UserError, match="--expert high and --expert low"):
        export_subject(path, tmp_path / "x.safetensors", "diffusers")
    high = export_subject(path, tmp_path / "high.safetensors", "diffusers", expert="high")
    low = export_subject(path, tmp_path / "low.safetensors", "diffusers", expert="low")
    assert load_file(str(high)).keys() == load_file(str(low)).keys()
    ours = _ours_at_weight_1(path, "a sks dog")
    pipe = build_tiny_wan(two_experts=True).to_pipeline()
    pipe.load_lora_weights(str(high), adapter_name="high")
    pipe.load_lora_weights(str(low), adapter_name="low", load_into_transformer_2=True)
    torch.testing.assert_close(ours, _wan_pipeline_video(pipe, "a sks dog"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("build", [build_tiny_wan, build_tiny_t2v])
def test_the_latent_distribution_is_what_encode_video_draws_from(build):
    model = build()
    frames = 1 if isinstance(model, WanModel) else 2
    video = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    mean, std = model.latent_distribution(video)
    drawn = model.encode_video(video, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    b, c, f, h, w = mean.shape
    if isinstance(model, WanModel):  # one 3D VAE call
        noise = torch.randn(mean.shape, generator=generator)
    else:  # a 2D VAE frame by frame: the noise is drawn frame-major
        noise = torch.randn(b * f, c, h, w, generator=generator)
        noise = noise.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(drawn, mean + std * noise, atol=1e-6, rtol=0)


def _count_calls(module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_cached_training_encodes_each_view_once_and_text_only_with_an_identifier(
    tmp_path, instance_dir, class_dir
):
    model = build_tiny_wan()
    vae_calls, text_calls = _count_calls(model.vae.encoder), _count_calls(model.text_encoder)
    config = _config(
        tmp_path,
        instance_dir,
        class_dir,
        **WAN_TRAINING,
        max_train_steps=4,
        train_frames=1,
        cache_views=2,
        instance_prompt="video of a sks dog",
        identifier="sks",
    )
    train(config, model=model, progress=False)
    # 3 photos x 2 views and 2 class images, encoded once; captions embedded once each
    assert len(vae_calls) == 3 * 2 + 2
    assert 0 < len(text_calls) <= 3 * 2 + 1
    assert model.vae.encoder.conv_in.weight.device == model.device  # back where it was

    model = build_tiny_wan()  # a learnt token: the text encoder runs in every step
    text_calls = _count_calls(model.text_encoder)
    config = _config(
        tmp_path,
        instance_dir,
        class_dir,
        "learnt",
        **WAN_TRAINING,
        max_train_steps=4,
        train_frames=1,
        cache_views=2,
    )
    path = train(config, model=model, progress=False)
    assert len(text_calls) == 4
    start = model.token_embedding().base.weight[model.tokenizer("dog").input_ids[0]]
    assert not torch.allclose(load_file(str(path))["token_embeddings"][0], start)


def test_cached_training_resumes_to_the_same_module(tmp_path, instance_dir, class_dir):
    def run(name, steps, **extra):
        config = _config(
            tmp_path,
            instance_dir,
            class_dir,
            name,
            **WAN_TRAINING,
            train_frames=1,
            max_train_steps=steps,
            checkpointing_steps=2,
            **extra,
        )
        return train(config, model=build_tiny_wan(), progress=False)

    straight = run("a", 4)
    run("b", 2)
    resumed = run("b", 4, resume_from_checkpoint="latest")
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-7, rtol=0)
    uncached = run("c", 4, cache_inputs=False)
    assert not torch.equal(load_file(str(uncached))["token_embeddings"], a["token_embeddings"])


def test_model_offload_streams_the_text_encoder_and_gives_the_same_video(tmp_path):
    path = _subject_with_random_lora(tmp_path)

    def run(offload):
        pipe = CustomCrafterPipeline.from_pretrained(subject=path, offload=offload, device="cpu")
        if offload:  # UMT5 streamed layer by layer (its weights left on the meta device)
            assert next(pipe.model.text_encoder.parameters()).device.type == "meta"
            assert next(pipe.model.unet.parameters()).device.type == "cpu"
        return pipe("a <new1> dog", k=2, progress=False, fold_lora=False, **SETTINGS).videos

    torch.testing.assert_close(run(None), run("model"), atol=1e-6, rtol=0)


def test_wan_trains_on_1_frame_clips_unless_told_and_records_it(tmp_path, instance_dir, class_dir):
    config = _config(
        tmp_path, instance_dir, class_dir, **WAN_TRAINING, max_train_steps=1, train_frames=None
    )
    path = train(config, model=build_tiny_wan(), progress=False)
    assert read_metadata(path).training["train_frames"] == 1
    config = _config(tmp_path, instance_dir, class_dir, "vc", max_train_steps=1, train_frames=None)
    assert read_metadata(train(config, progress=False)).training["train_frames"] == 4
