"""The DWVS workflow ``export --format comfyui`` writes for ComfyUI: core nodes only, with
the inputs ComfyUI's node definitions require, links that point at outputs of the right
type, and the subject's schedule in the two samplers' step ranges and the LoRA strengths."""

import json

import pytest
from conftest import identifier_subject

from customcrafter.cli import main

#: ComfyUI's core nodes this graph uses, as defined at Comfy-Org/ComfyUI a125cd84 (nodes.py,
#: comfy_extras/nodes_hunyuan.py, nodes_model_advanced.py, nodes_video.py, nodes_wan.py):
#: required inputs -> their types, and the output types
CORE = {
    "UNETLoader": ({"unet_name": "STR", "weight_dtype": "STR"}, ["MODEL"]),
    "CLIPLoader": ({"clip_name": "STR", "type": "STR"}, ["CLIP"]),
    "VAELoader": ({"vae_name": "STR"}, ["VAE"]),
    "ModelSamplingSD3": ({"model": "MODEL", "shift": "FLOAT"}, ["MODEL"]),
    "LoraLoaderModelOnly": (
        {"model": "MODEL", "lora_name": "STR", "strength_model": "FLOAT"},
        ["MODEL"],
    ),
    "CLIPTextEncode": ({"text": "STR", "clip": "CLIP"}, ["CONDITIONING"]),
    "EmptyHunyuanLatentVideo": (
        {"width": "INT", "height": "INT", "length": "INT", "batch_size": "INT"},
        ["LATENT"],
    ),
    "Wan22ImageToVideoLatent": (
        {"vae": "VAE", "width": "INT", "height": "INT", "length": "INT", "batch_size": "INT"},
        ["LATENT"],
    ),
    "KSamplerAdvanced": (
        {
            "model": "MODEL",
            "add_noise": "STR",
            "noise_seed": "INT",
            "steps": "INT",
            "cfg": "FLOAT",
            "sampler_name": "STR",
            "scheduler": "STR",
            "positive": "CONDITIONING",
            "negative": "CONDITIONING",
            "latent_image": "LATENT",
            "start_at_step": "INT",
            "end_at_step": "INT",
            "return_with_leftover_noise": "STR",
        },
        ["LATENT"],
    ),  # fmt: skip
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ["IMAGE"]),
    "CreateVideo": ({"images": "IMAGE", "fps": "FLOAT"}, ["VIDEO"]),
    "SaveVideo": (
        {"video": "VIDEO", "filename_prefix": "STR", "format": "STR", "codec": "STR"},
        [],
    ),
}
SCALAR = {"STR": str, "INT": int, "FLOAT": (int, float)}


@pytest.fixture
def subject(tmp_path):
    return identifier_subject(tmp_path / "subject.safetensors", 0.5)


def _export(subject, out, *extra):
    return main(["-q", "export", str(subject), "--out", str(out), *extra])


def test_the_workflow_is_core_nodes_linked_by_type(subject, tmp_path):
    out = tmp_path / "dog.safetensors"
    assert _export(subject, out, "--k", "7", "--lambda-s", "0.3", "--lambda-l", "0.9") == 0
    graph = json.loads((tmp_path / "dog.workflow.json").read_text())
    for node_id, node in graph.items():
        required, _ = CORE[node["class_type"]]
        assert set(node["inputs"]) == set(required), (node_id, node["class_type"])
        for name, value in node["inputs"].items():
            kind = required[name]
            if kind in SCALAR:
                assert isinstance(value, SCALAR[kind]), (node_id, name, value)
            else:  # a link [node, output]: that output has this type
                source, index = value
                assert CORE[graph[source]["class_type"]][1][index] == kind, (node_id, name)
    samplers = sorted(
        (n for n in graph.values() if n["class_type"] == "KSamplerAdvanced"),
        key=lambda n: n["inputs"]["start_at_step"],
    )
    first, second = (s["inputs"] for s in samplers)
    assert (first["start_at_step"], first["end_at_step"]) == (0, 7)
    assert (second["start_at_step"], second["end_at_step"]) == (7, first["steps"])
    assert first["return_with_leftover_noise"] == "enable" and first["add_noise"] == "enable"
    assert second["add_noise"] == "disable"
    assert graph[second["latent_image"][0]] is samplers[0]  # the second goes on from the first
    strengths = [graph[s["model"][0]]["inputs"] for s in (first, second)]
    assert [s["strength_model"] for s in strengths] == [0.3, 0.9]
    assert {s["lora_name"] for s in strengths} == {"dog.safetensors"}
    for key in ("noise_seed", "steps", "cfg", "sampler_name", "scheduler", "positive"):
        assert first[key] == second[key]
    prompt = graph[first["positive"][0]]["inputs"]["text"]
    assert "sks" in prompt.split()


def test_the_workflow_is_written_only_for_comfyui_and_never_over_a_file(subject, tmp_path, capsys):
    assert _export(subject, tmp_path / "a.safetensors", "--no-workflow") == 0
    assert not (tmp_path / "a.workflow.json").exists()
    assert _export(subject, tmp_path / "b.safetensors", "--format", "diffusers") == 0
    assert not (tmp_path / "b.workflow.json").exists()
    (tmp_path / "c.workflow.json").write_text("mine")
    assert _export(subject, tmp_path / "c.safetensors") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "c.workflow.json").read_text() == "mine"
    assert not (tmp_path / "c.safetensors").exists()
    assert _export(subject, tmp_path / "d.safetensors", "--k", "60") == 2  # beyond 50 steps
