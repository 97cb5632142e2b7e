"""Many videos from a prompt file (``generate --prompts FILE --seeds ... --output-dir``):
the manifest lists them all, and two processes (torchrun, as ``accelerate launch`` starts them) make the same
videos as one."""

import json
import re

import numpy as np
import pytest
from conftest import identifier_subject, launch

from customcrafter.cli import main
from customcrafter.io.video import read_video

SETTINGS = ["--steps", "2", "--k", "1", "--num-frames", "5", "--device", "cpu", "--dtype",
            "float32"]  # fmt: skip


@pytest.fixture
def job(tmp_path):
    subject = identifier_subject(tmp_path / "s.safetensors", 0.5)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a sks dog running\n\n# a comment\na sks dog, swimming\n")
    return ["generate", "--subject", str(subject), "--prompts", str(prompts), "--seeds", "0,7",
            *SETTINGS]  # fmt: skip


def _videos(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return manifest, {e["file"]: read_video(folder / e["file"]) for e in manifest}


def test_a_prompt_file_makes_a_video_per_prompt_and_seed_with_a_manifest(job, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["-q", *job, "--output-dir", str(out)]) == 0
    manifest, videos = _videos(out)
    assert [(e["prompt"], e["seed"]) for e in manifest] == [
        ("a sks dog running", 0), ("a sks dog running", 7),
        ("a sks dog, swimming", 0), ("a sks dog, swimming", 7),
    ]  # fmt: skip
    assert all(e["settings"]["num_inference_steps"] == 2 for e in manifest)
    assert not np.array_equal(*[videos[e["file"]] for e in manifest[:2]])  # seeds differ
    assert not list(out.glob(".manifest-*"))
    assert main(["-q", *job, "--output-dir", str(out)]) == 2  # no silent replacement
    assert "--overwrite" in capsys.readouterr().err
    assert main(["-q", *job, "--output-dir", str(out), "--prompt", "x"]) == 2
    assert main(["-q", *SETTINGS[:2], "generate", "--subject", "s", "--prompt", "x"]) == 2


@pytest.mark.slow
def test_two_processes_make_the_videos_one_makes(job, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["-q", *job, "--output-dir", str(one)]) == 0
    process = launch([*job, "--output-dir", str(two)])
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    # the four videos were split: four sampling bars in all, not four on each process
    assert len(re.findall(r"sampling:\s+0%", err)) == 4, err[-3000:]
    manifest_one, videos_one = _videos(one)
    manifest_two, videos_two = _videos(two)
    assert manifest_one == manifest_two
    for name, frames in videos_one.items():
        assert np.array_equal(frames, videos_two[name]), name
