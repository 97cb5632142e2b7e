"""Blocks offloaded and streamed (``--offload-blocks N``): the same numbers as without, in
sampling and in training, the weights moved in the order the passes run them and never more
than two offloaded blocks on the device. The execution device is the CPU here: what is tested
is the mechanism (the onload inside each block, the placeholders, the order of the moves); a
GPU script checks the memory (``benchmarks/memory_check.py``)."""

import pytest
import torch
from conftest import identifier_subject
from safetensors.torch import load_file
from test_training import _config

from customcrafter.cli import main
from customcrafter.config import TrainConfig
from customcrafter.errors import UserError
from customcrafter.models.registry import build_tiny_t2v
from customcrafter.models.wan import build_tiny_wan
from customcrafter.sampling import CustomCrafterPipeline
from customcrafter.training import train

#: the LoRA beside each layer in both (``--unmerged``): the same computation either way
SETTINGS = dict(num_inference_steps=3, k=2, num_frames=5, height=16, width=16, fold_lora=False)


def _video(model, subject=None, **settings):
    pipe = CustomCrafterPipeline(model)
    if subject is not None:
        from customcrafter.subject import SpatialSubjectModule

        pipe.subject = SpatialSubjectModule.load(subject, model)
    generator = torch.Generator().manual_seed(3)
    prompt = "a sks dog" if subject is not None else "a dog"
    settings = {**SETTINGS, **settings}
    return pipe(prompt, generator=generator, progress=False, **settings).videos


def _resident_at_most_two(log) -> bool:
    resident = set()
    for event in log:
        where = event[1:3]
        if event[0] == "load":
            resident.add(where)
        else:
            resident.discard(where)
        if len(resident) > 2:
            return False
    return True


@pytest.mark.parametrize("two_experts", [False, True])
def test_sampling_with_offloaded_blocks_gives_the_same_video(tmp_path, two_experts):
    def build():
        return build_tiny_wan(num_layers=4, two_experts=two_experts)

    subject = identifier_subject(tmp_path / "s.safetensors", 0.5, build())
    plain = _video(build(), subject)
    model = build()
    model.offload_blocks(3, "cpu")
    assert torch.equal(_video(model, subject), plain)  # the LoRA in offloaded blocks too
    log = model.block_offload.log
    assert _resident_at_most_two(log)
    # the first forward pass: blocks 1, 2, 3 of the first expert, each prefetching the next
    assert log[:3] == [("load", 0, 0, False), ("load", 0, 1, True), ("drop", 0, 0)]
    assert not model.block_offload._resident  # released before the VAE decodes


def test_with_offloaded_blocks_the_lora_is_folded_as_each_layer_runs(tmp_path):
    subject = identifier_subject(tmp_path / "s.safetensors", 0.5, build_tiny_wan(num_layers=4))
    settings = {**SETTINGS, "fold_lora": True}
    kept = _video(build_tiny_wan(num_layers=4), subject, **settings)  # folded copies
    model = build_tiny_wan(num_layers=4)
    model.offload_blocks(3, "cpu")
    streamed = _video(model, subject, **settings)  # folded as each layer runs
    assert torch.allclose(streamed, kept, atol=1e-5)


def test_offloaded_weights_are_placeholders_that_take_no_memory_and_give_nan():
    model = build_tiny_wan(num_layers=3)
    reference = model.unet.blocks[2].attn1.to_q.weight.detach().clone()
    model.offload_blocks(2, "cpu")
    weight = model.unet.blocks[2].attn1.to_q.weight
    assert weight.shape == reference.shape and weight.untyped_storage().nbytes() == 4
    assert torch.isnan(weight).all()
    assert model.unet.blocks[0].attn1.to_q.weight.untyped_storage().nbytes() > 4  # kept
    assert model.block_offload.bytes_offloaded() > 0
    # a block asked to run onloads first
    model.block_offload._enter(0, 1)
    assert torch.equal(model.unet.blocks[2].attn1.to_q.weight, reference)


def test_the_unet_bases_stream_their_stages_with_the_same_numbers():
    plain = _video(build_tiny_t2v())
    model = build_tiny_t2v()
    count = len(model.offloadable_blocks()[0]) - 1
    model.offload_blocks(count, "cpu")
    assert torch.equal(_video(model), plain)
    assert _resident_at_most_two(model.block_offload.log)


def test_float8_weights_offloaded_give_the_float8_video(tmp_path):
    def stored_video(offload):
        model = build_tiny_wan(num_layers=4)
        model.store("float8", None, torch.bfloat16)
        if offload:
            model.offload_blocks(2, "cpu")
        return _video(model), model

    plain, _ = stored_video(False)
    streamed, model = stored_video(True)
    assert torch.equal(streamed, plain)
    stored = model.block_offload._stored[model.unet.blocks[3]]
    assert any(s.dtype == torch.float8_e4m3fn for _, s, _ in stored)  # what moves: float8


def _trained(tmp_path, instance_dir, class_dir, name, offload, losses):
    config = _config(
        tmp_path, instance_dir, class_dir, name, base="tiny-wan", height=16, width=16,
        identifier="sks", instance_prompt="video of a sks dog", max_train_steps=3,
        checkpointing_steps=3, train_frames=1, gradient_checkpointing=True,
        offload_blocks=offload,
    )  # fmt: skip
    model = build_tiny_wan(num_layers=4)
    path = train(
        config, model=model, progress=False, callback=lambda s, t, x: losses.append(x["loss"])
    )
    return load_file(path), model


def test_training_with_offloaded_blocks_gives_the_same_lora(tmp_path, instance_dir, class_dir):
    plain_losses, streamed_losses = [], []
    plain, _ = _trained(tmp_path, instance_dir, class_dir, "plain", 0, plain_losses)
    streamed, model = _trained(tmp_path, instance_dir, class_dir, "streamed", 3, streamed_losses)
    assert plain_losses == streamed_losses
    assert plain.keys() == streamed.keys()
    assert all(torch.equal(plain[k], streamed[k]) for k in plain)
    assert any("blocks.3" in k and "lora_B" in k and plain[k].abs().sum() > 0 for k in plain)
    log = model.block_offload.log
    assert _resident_at_most_two(log)
    # the backward pass recomputes the blocks last to first, prefetching the one before
    loads = [event[2] for event in log if event[0] == "load" and event[3]]
    assert any(a > b for a, b in zip(loads, loads[1:], strict=False))  # in reverse order


def test_offloaded_blocks_need_checkpointing_and_a_count_that_exists(tmp_path):
    with pytest.raises(UserError, match="--gradient-checkpointing"):
        TrainConfig(
            instance_data_dir=str(tmp_path), instance_prompt="a <new1> dog",
            output_dir=str(tmp_path / "o"), prior_loss_weight=0, offload_blocks=2,
        ).validate()  # fmt: skip
    model = build_tiny_wan()
    with pytest.raises(UserError, match="1 to 2"):
        model.offload_blocks(3, "cpu")
    model.offload_blocks(1, "cpu")
    with pytest.raises(RuntimeError, match="cast the weights before"):
        model.to(dtype=torch.float16)


def test_generate_takes_the_flag_and_refuses_it_with_cpu_offload(tmp_path, capsys):
    subject = identifier_subject(tmp_path / "s.safetensors", 0.5)
    argv = ["-q", "generate", "--subject", str(subject), "--prompt", "a sks dog", "--out"]
    settings = ["--steps", "2", "--k", "1", "--num-frames", "5", "--device", "cpu"]
    assert main([*argv, str(tmp_path / "a.mp4"), *settings, "--offload-blocks", "1"]) == 0
    assert (tmp_path / "a.mp4").is_file()
    both = [*settings, "--offload-blocks", "1", "--offload", "model"]
    assert main([*argv, str(tmp_path / "b.mp4"), *both]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "b.mp4").exists()


@pytest.mark.parametrize("checkpointed_first", [False, True])
def test_the_backward_pass_recomputes_with_the_weights_in_either_order(checkpointed_first):
    """Gradient checkpointing turned on before or after the offload: the recomputation in
    the backward pass onloads the block again (a missing onload gives NaN)."""

    def input_gradient(offload: bool):
        model = build_tiny_wan(num_layers=4)
        if checkpointed_first:
            model.enable_gradient_checkpointing()
        if offload:
            model.offload_blocks(3, "cpu")
        if not checkpointed_first:
            model.enable_gradient_checkpointing()
        latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
        latents.requires_grad_(True)
        context = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
        model.predict(latents, torch.tensor([500.0]), context, 8).square().sum().backward()
        return latents.grad, model

    plain, _ = input_gradient(False)
    streamed, model = input_gradient(True)
    assert torch.isfinite(streamed).all() and torch.equal(streamed, plain)
    recomputed = [e for e in model.block_offload.log if e[0] == "load"]
    assert len(recomputed) > 3  # the forward pass's loads, then the backward pass's
