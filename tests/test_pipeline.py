"""Sampling: the weight the subject module contributes at every UNet call, and restoration."""

import pytest
import torch
import torch.nn.functional as F

from customcrafter.errors import UserError
from customcrafter.sampling import CustomCrafterPipeline, DynamicWeightSchedule
from customcrafter.subject import SpatialSubjectModule
from customcrafter.subject.module import ADAPTER


def _trained_looking_subject(model):
    """A subject module with non-zero LoRA B, as after training."""
    module = SpatialSubjectModule.create(model, {"<new1>": "dog"})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.lora_parameters()[1::2]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


def _observe_contribution(module, name, folded=False):
    """Hook one adapted layer; at each call, solve for w in out = W0 x + w * (B A x), per half
    of the batch (unconditional and conditional passes). ``folded``: the LoRA is folded into
    the weights, and the plain Linear runs in its wrapper's place."""
    layer = module.layers[name]
    w0 = layer.base_layer.weight.detach().clone()
    bias = layer.base_layer.bias
    seen = []

    def hook(mod, inputs, output):
        x = inputs[0]
        delta = output - F.linear(x, w0, bias)
        direction = F.linear(
            F.linear(x, layer.lora_A[ADAPTER].weight), layer.lora_B[ADAPTER].weight
        )
        direction = direction * (layer.lora_alpha[ADAPTER] / layer.r[ADAPTER])
        halves = [
            (d * u).sum() / (u * u).sum()
            for d, u in zip(delta.chunk(2), direction.chunk(2), strict=True)
        ]
        seen.append([round(float(h), 4) for h in halves])

    return (layer.base_layer if folded else layer).register_forward_hook(hook), seen


@pytest.mark.parametrize("fold", [True, False])
def test_every_unet_call_sees_the_scheduled_weight(tiny_model, fold):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    handle, seen = _observe_contribution(module, module.metadata.targets[0], folded=fold)
    calls = []
    tiny_model.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    out = pipe("a <new1> dog", num_inference_steps=50, num_frames=2, fold_lora=fold, progress=False)
    handle.remove()
    assert len(calls) == 50
    expected = [0.4] * 5 + [0.8] * 45
    assert out.weights == expected
    assert [pair for pair in seen] == [[w, w] for w in expected]


def test_base_weights_are_restored_exactly_after_sampling(tiny_model):
    module = _trained_looking_subject(tiny_model)
    before = {k: v.clone() for k, v in tiny_model.unet.state_dict().items()}
    pipe = CustomCrafterPipeline(tiny_model, module)
    pipe("a <new1> dog", num_inference_steps=6, num_frames=2, progress=False)
    after = tiny_model.unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_base_weights_are_restored_when_sampling_fails(tiny_model):
    module = _trained_looking_subject(tiny_model)
    name = module.metadata.targets[0]
    original = module.layers[name].base_layer.weight.detach().clone()
    pipe = CustomCrafterPipeline(tiny_model, module)

    def explode(step, t, weight):
        if step == 7:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        pipe("a <new1> dog", num_inference_steps=10, num_frames=2, callback=explode, progress=False)
    assert torch.equal(module.layers[name].base_layer.weight, original)


def test_folded_and_unmerged_sampling_agree(tiny_model):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    kwargs = dict(num_inference_steps=8, num_frames=2, progress=False, seed=3)
    folded = pipe("a <new1> dog", fold_lora=True, **kwargs).videos
    unmerged = pipe("a <new1> dog", fold_lora=False, **kwargs).videos
    assert torch.allclose(folded, unmerged, atol=1e-4)


def test_the_next_video_reuses_the_folded_copies(tiny_model):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    kwargs = dict(num_inference_steps=8, num_frames=2, progress=False, seed=3)
    first = pipe("a <new1> dog", **kwargs).videos
    assert module.fold_copies.folds == 2  # 0.4, then 0.8, into one copy
    second = pipe("a <new1> dog", **kwargs).videos
    assert module.fold_copies.folds == 3  # 0.4 asked for again: a copy of its own
    third = pipe("a <new1> dog", **kwargs).videos
    assert module.fold_copies.folds == 3 and len(module.fold_copies.copies) == 2
    assert torch.equal(first, second) and torch.equal(first, third)


def test_changed_lora_weights_are_folded_again(tiny_model):
    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    kwargs = dict(num_inference_steps=8, num_frames=2, progress=False, seed=3)
    before = pipe("a <new1> dog", **kwargs).videos
    changed = {k: v * 2 for k, v in module.state_dict().items()}
    module.load_lora_state_dict(changed)  # the same tensors, written in place
    after = pipe("a <new1> dog", **kwargs).videos
    assert module.fold_copies.folds == 4
    assert not torch.allclose(before, after, atol=1e-3)
    module.release_folded()
    assert torch.equal(after, pipe("a <new1> dog", **kwargs).videos)  # as folds made anew


def test_without_room_for_two_copies_one_is_folded_per_change(tiny_model, monkeypatch):
    import psutil

    module = _trained_looking_subject(tiny_model)
    pipe = CustomCrafterPipeline(tiny_model, module)
    kwargs = dict(num_inference_steps=8, num_frames=2, progress=False, seed=3)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("M", (), {"available": 0}))
    first = pipe("a <new1> dog", **kwargs).videos
    second = pipe("a <new1> dog", **kwargs).videos
    assert module.fold_copies.folds == 4 and len(module.fold_copies.copies) == 1
    assert torch.equal(first, second)
    monkeypatch.undo()  # room again: the second weight gets its own copy
    pipe("a <new1> dog", **kwargs)
    pipe("a <new1> dog", **kwargs)
    assert module.fold_copies.folds == 5 and len(module.fold_copies.copies) == 2


@pytest.mark.parametrize("tokens", [3, 40])
def test_a_layer_folded_as_it_runs_computes_the_lora_beside_it(tiny_model, tokens):
    from customcrafter.subject.folding import _FoldAsRun

    module = _trained_looking_subject(tiny_model)
    layer = next(iter(module.layers.values()))
    wrapper = _FoldAsRun(layer)
    wrapper.strength = 0.6
    module.set_scale(0.6)
    x = torch.randn(2, tokens, layer.base_layer.in_features)
    assert torch.allclose(wrapper(x), layer(x), atol=1e-5)
    assert wrapper.folds == (1 if tokens >= wrapper.fold_from else 0)


def test_folding_as_run_starts_where_it_moves_fewer_bytes():
    from peft import LoraConfig, inject_adapter_in_model

    from customcrafter.subject.folding import _FoldAsRun

    def layer(width):
        net = torch.nn.Sequential()
        net.add_module("to_q", torch.nn.Linear(width, width, device="meta"))
        config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q"])
        return inject_adapter_in_model(config, net, adapter_name=ADAPTER).to_q

    # 2 in out / (in + 5 out) tokens: Wan 1.3B's 1536-wide layers, 14B's 5120
    assert _FoldAsRun(layer(1536)).fold_from == 512
    assert round(_FoldAsRun(layer(5120)).fold_from) == 1707


def test_subject_weight_changes_the_video_and_off_matches_the_base(tiny_model):
    module = _trained_looking_subject(tiny_model)
    kwargs = dict(num_inference_steps=6, num_frames=2, progress=False, seed=1)
    with_subject = CustomCrafterPipeline(tiny_model, module)
    dwvs = with_subject("a <new1> dog", schedule=DynamicWeightSchedule(), **kwargs).videos
    off = with_subject("a <new1> dog", schedule=DynamicWeightSchedule.off(), **kwargs).videos
    assert not torch.allclose(dwvs, off)


def test_output_shape_range_and_seed_determinism(tiny_model):
    pipe = CustomCrafterPipeline(tiny_model)
    a = pipe("a dog", num_inference_steps=3, num_frames=3, progress=False, seed=5).videos
    b = pipe("a dog", num_inference_steps=3, num_frames=3, progress=False, seed=5).videos
    c = pipe("a dog", num_inference_steps=3, num_frames=3, progress=False, seed=6).videos
    assert a.shape == (1, 3, 3, 32, 32)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prompt_tokens_without_a_subject_are_stripped_and_unknown_ones_refused(tiny_model):
    base = CustomCrafterPipeline(tiny_model)
    assert base("a <new1> dog", num_inference_steps=1, num_frames=1, progress=False).prompts == [
        "a dog"
    ]
    module = SpatialSubjectModule.create(tiny_model, {"<new1>": "dog"})
    with pytest.raises(UserError, match="<new2>"):
        CustomCrafterPipeline(tiny_model, module)(
            "a <new2> cat", num_inference_steps=1, progress=False
        )


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_gives_the_same_video(mode):
    """Offload hooks move weights to the execution device (the CPU here, a GPU for users)
    as layers run; the numbers and the subject module's weighting must not change."""
    from customcrafter.models import build_tiny_t2v

    def run(offload):
        model = build_tiny_t2v()
        module = _trained_looking_subject(model)
        if offload:
            model.enable_cpu_offload(offload, "cpu")
            assert model.offload == offload and model.device == torch.device("cpu")
            stored = next(model.unet.parameters()).device.type
            assert stored == ("meta" if offload == "sequential" else "cpu")
        # offloaded weights live outside the layers, so LoRA runs unmerged: compare like
        # with like
        return CustomCrafterPipeline(model, module)(
            "a <new1> dog", num_inference_steps=8, num_frames=2, fold_lora=False, progress=False
        ).videos

    assert torch.allclose(run(None), run(mode), atol=1e-6)
