"""The training loop: what changes, what stays frozen, resuming, interruption, the loss."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from customcrafter.config import TrainConfig
from customcrafter.errors import UserError
from customcrafter.io.images import list_images
from customcrafter.models import build_tiny_t2v
from customcrafter.training import TrainingInterrupted, compute_loss, loop, train
from customcrafter.training.data import SubjectImages
from customcrafter.training.loop import SubjectDenoiser, detach_start_token


def _config(tmp_path, instance_dir, class_dir, name="out", **overrides):
    values = dict(
        base="tiny",
        instance_data_dir=str(instance_dir),
        instance_prompt="video of a <new1> dog",
        class_prompt="video of a dog",
        class_data_dir=str(class_dir),
        output_dir=str(tmp_path / name),
        max_train_steps=6,
        checkpointing_steps=3,
        learning_rate=1e-2,
        train_frames=2,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_training_changes_only_the_subject_module(tmp_path, instance_dir, class_dir):
    model = build_tiny_t2v()
    frozen_unet = {k: v.clone() for k, v in model.unet.state_dict().items()}
    frozen_text = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    path = train(_config(tmp_path, instance_dir, class_dir), model=model, progress=False)
    unet_after = model.unet.state_dict()
    for key, before in frozen_unet.items():
        peft_key = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        after = unet_after.get(key, unet_after.get(peft_key))
        assert after is not None and torch.equal(before, after), key
    temporal = [k for k in frozen_unet if "temp_" in k or "transformer_in" in k]
    assert temporal, "the tiny model has temporal layers"
    text_after = model.text_encoder.state_dict()
    for key, before in frozen_text.items():
        match = [
            v
            for k, v in text_after.items()
            if k.replace("token_embedding.base.", "token_embedding.") == key
        ]
        assert match and torch.equal(before, match[0]), key
    tensors = load_file(str(path))
    assert any(float(v.abs().max()) > 0 for k, v in tensors.items() if k.endswith("lora_B.weight"))
    assert tensors["token_embeddings"].shape == (1, 32)


def test_six_steps_straight_equal_three_then_resume_then_three(tmp_path, instance_dir, class_dir):
    straight = train(_config(tmp_path, instance_dir, class_dir, "a"), progress=False)
    train(_config(tmp_path, instance_dir, class_dir, "b", max_train_steps=3), progress=False)
    resumed = train(
        _config(tmp_path, instance_dir, class_dir, "b", resume_from_checkpoint="latest"),
        progress=False,
    )
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-7), key
    assert not torch.equal(
        a["token_embeddings"],
        load_file(str(tmp_path / "b/checkpoints/checkpoint-3/subject.safetensors"))[
            "token_embeddings"
        ],
    )


def test_ctrl_c_keeps_the_last_checkpoint_and_resumes(
    tmp_path, instance_dir, class_dir, monkeypatch
):
    real = loop.compute_loss
    calls = {"n": 0}

    def interrupt_at_step_five(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "compute_loss", interrupt_at_step_five)
    config = _config(tmp_path, instance_dir, class_dir, checkpointing_steps=2)
    with pytest.raises(
        TrainingInterrupted, match="checkpoint-4 is intact|checkpoint-4\\) is intact"
    ):
        train(config, progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "out/checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert not (tmp_path / "out/subject.safetensors").exists()
    monkeypatch.setattr(loop, "compute_loss", real)
    config.resume_from_checkpoint = "latest"
    assert train(config, progress=False).is_file()


def test_existing_results_are_not_overwritten_without_consent(tmp_path, instance_dir, class_dir):
    config = _config(tmp_path, instance_dir, class_dir, max_train_steps=1)
    train(config, progress=False)
    with pytest.raises(UserError, match="--overwrite"):
        train(config, progress=False)
    config.overwrite = True
    assert train(config, progress=False).is_file()


def test_prompt_without_a_token_is_refused(tmp_path, instance_dir, class_dir):
    with pytest.raises(UserError, match="no new token"):
        train(
            _config(tmp_path, instance_dir, class_dir, instance_prompt="video of a dog"),
            progress=False,
        )


def test_class_images_are_generated_once_and_cached(tmp_path, instance_dir):
    config = _config(
        tmp_path,
        instance_dir,
        None,
        class_data_dir=None,
        num_class_images=2,
        class_sampling_steps=2,
        max_train_steps=1,
    )
    train(config, progress=False)
    from customcrafter.training.class_images import cache_root

    cached = sorted((cache_root() / "class_images").rglob("*.png"))
    assert len(cached) >= 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    train(
        _config(
            tmp_path,
            instance_dir,
            None,
            "again",
            class_data_dir=None,
            num_class_images=2,
            class_sampling_steps=2,
            max_train_steps=1,
        ),
        progress=False,
    )
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_total_loss_is_instance_loss_plus_weighted_prior_loss(tmp_path, instance_dir, class_dir):
    model = build_tiny_t2v()
    from customcrafter.subject import SpatialSubjectModule

    SpatialSubjectModule.create(model, {"<new1>": "dog"})
    inst = SubjectImages(list_images(instance_dir), 32, 32, 2, 2, "<new1> dog")
    cls = SubjectImages(list_images(class_dir), 32, 32, 2, 2, "video of a dog")
    rng = np.random.default_rng(0)
    batch_i, batch_c = inst.sample(1, rng), cls.sample(1, rng)
    config = TrainConfig(prior_loss_weight=0.5, class_prompt="x")
    loss, logs = compute_loss(
        model, SubjectDenoiser(model), batch_i, batch_c, torch.Generator().manual_seed(0), config
    )
    assert loss.item() == pytest.approx(logs["loss"] + 0.5 * logs["prior"], rel=1e-6)


def test_loss_ignores_latents_outside_the_mask(tmp_path, instance_dir):
    model = build_tiny_t2v()
    from customcrafter.subject import SpatialSubjectModule

    SpatialSubjectModule.create(model, {"<new1>": "dog"})
    inst = SubjectImages(list_images(instance_dir), 32, 32, 2, 2, "<new1> dog")
    batch = inst.sample(1, np.random.default_rng(0))
    batch.masks[..., 8:] = 0
    config = TrainConfig(prior_loss_weight=0.0)
    denoiser = SubjectDenoiser(model)
    outputs = {}

    def capture(module, args, output):
        outputs["pred"] = output

    handle = denoiser.register_forward_hook(capture)
    loss, _ = compute_loss(model, denoiser, batch, None, torch.Generator().manual_seed(0), config)
    handle.remove()
    gen = torch.Generator().manual_seed(0)
    latents = model.encode_video(batch.pixels, generator=gen)
    noise = torch.randn(latents.shape, generator=gen)
    expected = (outputs["pred"] - noise)[..., :8].square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_start_token_keys_and_values_get_no_gradient(tiny_model):
    from customcrafter.subject import SpatialSubjectModule

    module = SpatialSubjectModule.create(tiny_model, {"<new1>": "dog"})
    handles = detach_start_token(tiny_model)
    name = next(t for t in module.metadata.targets if t.endswith("attn2.to_k"))
    layer = module.layers[name]
    with torch.no_grad():
        layer.lora_B["subject"].weight.normal_()
    context = torch.randn(2, 5, 32)
    layer(context)[:, 0].sum().backward()
    assert (
        layer.lora_A["subject"].weight.grad is None
        or float(layer.lora_A["subject"].weight.grad.abs().sum()) == 0
    )
    layer(context)[:, 1].sum().backward()
    assert float(layer.lora_A["subject"].weight.grad.abs().sum()) > 0
    for h in handles:
        h.remove()


def test_checkpoints_restore_the_global_random_states(tmp_path, instance_dir, class_dir):
    import random

    from customcrafter.training.checkpoint import _restore_rng_states, _rng_states

    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    saved = _rng_states()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.save(saved, tmp_path / "rng.pt")
    _restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


@pytest.mark.parametrize("base", ["tiny", "tiny-wan"])
def test_gradient_checkpointing_gives_the_same_gradients(instance_dir, base):
    from customcrafter.models.wan import build_tiny_wan

    build, size, frames, factor = {
        "tiny": (build_tiny_t2v, 32, 2, 2),
        "tiny-wan": (build_tiny_wan, 16, 1, 8),
    }[base]
    grads = []
    for checkpointing in (False, True):
        model = build()
        from customcrafter.subject import SpatialSubjectModule

        module = SpatialSubjectModule.create(model, {"<new1>": "dog"})
        with torch.no_grad():
            for p in module.lora_parameters()[1::2]:
                p.normal_(std=0.1)
        if checkpointing:
            model.enable_gradient_checkpointing()
        inst = SubjectImages(list_images(instance_dir), size, size, frames, factor, "<new1> dog")
        batch = inst.sample(1, np.random.default_rng(0))
        config = TrainConfig(prior_loss_weight=0.0)
        loss, _ = compute_loss(
            model, SubjectDenoiser(model), batch, None, torch.Generator().manual_seed(0), config
        )
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_two_new_tokens_train_together(tmp_path, instance_dir, class_dir):
    config = _config(
        tmp_path,
        instance_dir,
        class_dir,
        instance_prompt="video of a <new1> dog with a <new2> ball",
        max_train_steps=2,
    )
    tensors = load_file(str(train(config, progress=False)))
    from customcrafter.subject import read_metadata

    meta = read_metadata(tmp_path / "out")
    assert meta.tokens == ["<new1>", "<new2>"]
    assert meta.initializer_words == {"<new1>": "dog", "<new2>": "ball"}
    assert tensors["token_embeddings"].shape == (2, 32)


def test_moving_class_clips_are_generated_whole_cached_and_trained_on(tmp_path, instance_dir):
    from customcrafter.io.video import read_video
    from customcrafter.training.class_images import cache_root

    overrides = dict(
        class_data_dir=None, num_class_images=2, class_sampling_steps=2, max_train_steps=1,
        class_videos=True, train_frames=3,
    )  # fmt: skip
    train(_config(tmp_path, instance_dir, None, **overrides), progress=False)
    cached = sorted((cache_root() / "class_videos").rglob("*.mp4"))
    assert len(cached) == 2 and not list((cache_root() / "class_videos").rglob("*.png"))
    clip = read_video(cached[0])
    assert clip.shape[0] == 3  # the whole clip, one file per seed
    assert not np.array_equal(clip[0], clip[-1])  # it is not a still repeated
    stamps = [p.stat().st_mtime_ns for p in cached]
    train(_config(tmp_path, instance_dir, None, "again", **overrides), progress=False)
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_class_clips_keep_their_frames_and_take_a_window_of_the_training_length(tmp_path):
    from customcrafter.io.video import write_video
    from customcrafter.training.data import ClassClips

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    write_video(tmp_path / "a.mp4", frames, lossless=True)
    clips = ClassClips([tmp_path / "a.mp4"], 16, 16, 3, 4, "video of a dog")
    batch = clips.sample(4, np.random.default_rng(1))
    assert batch.pixels.shape == (4, 3, 3, 16, 16) and batch.masks.shape == (4, 1, 3, 4, 4)
    assert batch.prompts == ["video of a dog"] * 4
    as_frames = ((batch.pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
    for clip in as_frames.numpy():  # a run of consecutive frames of the file
        starts = [s for s in range(3) if np.array_equal(clip, frames[s : s + 3])]
        assert starts
    with pytest.raises(UserError, match="fewer than --train-frames 6"):
        ClassClips([tmp_path / "a.mp4"], 16, 16, 6, 4, "video of a dog")


def test_moving_class_clips_need_more_than_one_frame_and_a_folder_of_videos(
    tmp_path, instance_dir, class_dir
):
    with pytest.raises(UserError, match="--train-frames 2 or more"):
        _config(tmp_path, instance_dir, class_dir, class_videos=True, train_frames=1).validate()
    with pytest.raises(UserError, match="holds no videos"):
        train(_config(tmp_path, instance_dir, class_dir, class_videos=True), progress=False)


def test_a_callback_sees_every_step_and_can_stop_with_a_checkpoint(
    tmp_path, instance_dir, class_dir
):
    seen = []

    def stop_at_two(step, total, logs):
        seen.append((step, total, sorted(logs)))
        return step == 2

    config = _config(tmp_path, instance_dir, class_dir, "b")
    with pytest.raises(TrainingInterrupted, match="stopped at step 2 of 6"):
        train(config, progress=False, callback=stop_at_two)
    assert seen == [(1, 6, ["grad_norm", "loss", "prior"]), (2, 6, ["grad_norm", "loss", "prior"])]
    assert (tmp_path / "b/checkpoints/checkpoint-2").is_dir()
    resumed = train(
        _config(tmp_path, instance_dir, class_dir, "b", resume_from_checkpoint="latest"),
        progress=False,
    )
    straight = train(_config(tmp_path, instance_dir, class_dir, "a"), progress=False)
    a, b = load_file(str(straight)), load_file(str(resumed))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-7), key
