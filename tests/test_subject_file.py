"""The subject module file: small, self-describing, reloadable, and refused by other bases."""

import json

import pytest
import torch
from safetensors import safe_open

from customcrafter.errors import UserError
from customcrafter.models import build_tiny_t2v
from customcrafter.subject import SpatialSubjectModule, read_metadata


def _saved(tmp_path):
    model = build_tiny_t2v()
    module = SpatialSubjectModule.create(model, {"<new1>": "dog"})
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = module.save(tmp_path / "subject.safetensors", training={"learning_rate": 3e-5})
    return module, path


def test_file_describes_itself(tmp_path):
    module, path = _saved(tmp_path)
    meta = read_metadata(path)
    assert meta.base_model == "tiny"
    assert (
        meta.rank == 4 and meta.tokens == ["<new1>"] and meta.initializer_words == {"<new1>": "dog"}
    )
    assert meta.targets == module.metadata.targets and meta.target_preset == "spatial-qkv"
    assert meta.training == {"learning_rate": 3e-5}
    with safe_open(str(path), framework="pt") as f:
        assert (
            json.loads(f.metadata()["customcrafter"])["architecture_fingerprint"]
            == meta.architecture_fingerprint
        )
        assert set(f.keys()) == set(module.state_dict())


def test_reloading_gives_the_same_tensors_and_the_same_video(tmp_path):
    module, path = _saved(tmp_path)
    fresh = build_tiny_t2v()
    loaded = SpatialSubjectModule.load(tmp_path, fresh)  # the folder works as well as the file
    for key, value in module.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    from customcrafter.sampling import CustomCrafterPipeline

    kwargs = dict(num_inference_steps=6, num_frames=2, progress=False)
    a = CustomCrafterPipeline(module.model, module)("a <new1> dog", **kwargs).videos
    b = CustomCrafterPipeline(fresh, loaded)("a <new1> dog", **kwargs).videos
    assert torch.equal(a, b)


def test_another_architecture_is_refused_with_the_mismatch_named(tmp_path):
    _, path = _saved(tmp_path)
    other = build_tiny_t2v(channels=16)
    other.name = "other-model"
    with pytest.raises(
        UserError, match="trained on base model 'tiny'.*'other-model'.*architecture differs"
    ):
        SpatialSubjectModule.load(path, other)


def test_same_architecture_with_other_weights_is_refused_unless_not_strict(tmp_path):
    _, path = _saved(tmp_path)
    other = build_tiny_t2v(seed=1)
    with pytest.raises(UserError, match="different weights"):
        SpatialSubjectModule.load(path, other)
    assert SpatialSubjectModule.load(
        path, build_tiny_t2v(seed=1), strict=False
    ).metadata.tokens == ["<new1>"]


def test_files_that_are_not_subject_modules_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not a CustomCrafter subject module"):
        read_metadata(tmp_path / "other.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable safetensors"):
        read_metadata(tmp_path / "broken.safetensors")
    with pytest.raises(UserError, match="no subject module"):
        read_metadata(tmp_path / "missing")
