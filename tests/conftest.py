import os
import signal
import subprocess
import sys
from pathlib import Path

# the tests run offline: a name that is no local folder is looked up in the local Hugging
# Face cache only (set before huggingface_hub reads it, on import)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from customcrafter.models import build_tiny_t2v


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Generated class images go to a per-session temporary cache, never the user's."""
    monkeypatch.setenv("CUSTOMCRAFTER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_model():
    return build_tiny_t2v()


def write_images(folder, count=3, size=(48, 40), seed=0, prefix="img"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def instance_dir(tmp_path):
    folder = tmp_path / "instance"
    write_images(folder)
    return folder


@pytest.fixture
def class_dir(tmp_path):
    folder = tmp_path / "class"
    write_images(folder, count=2, seed=1)
    return folder


def learn_tiny_subject(root: Path) -> Path:
    """Photos in ``root/photos`` and, learnt from them in one step, a tiny subject with a
    learnt token in ``root/subject`` (returned)."""
    from customcrafter.cli import main

    write_images(root / "photos")
    argv = ["-q", "train", "--base", "tiny", "--instance-data-dir", str(root / "photos"),
            "--instance-prompt", "a <new1> dog", "--prior-loss-weight", "0", "--output-dir",
            str(root / "subject"), "--max-train-steps", "1", "--train-frames", "2"]  # fmt: skip
    assert main(argv) == 0
    return root / "subject"


def identifier_subject(path: Path, b_std: float = 0.0, model=None, identifier="sks") -> Path:
    """A subject of ``model`` (default: tiny-wan) saved at ``path``, named by the word
    ``identifier`` (it exports without dropping a token) or, with ``identifier=None``, by the token ``<new1>``; its LoRA
    B drawn with ``b_std`` from seed 5, so that it visibly changes the video (0: a fresh
    module, which changes nothing)."""
    import torch

    from customcrafter.models.wan import build_tiny_wan
    from customcrafter.subject import SpatialSubjectModule

    words = {} if identifier else {"<new1>": "dog"}
    module = SpatialSubjectModule.create(model or build_tiny_wan(), words, identifier=identifier)
    if b_std:
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for layer in module.layers.values():
                b = layer.lora_B["subject"].weight
                b.copy_(torch.randn(b.shape, generator=generator) * b_std)
    return module.save(path)


def train_tiny(tmp_path: Path, base: str, name: str, *extra: str) -> dict:
    """``customcrafter train`` of the test model ``base`` on photos written once under
    ``tmp_path``, into ``tmp_path / name`` (checkpoints every 2 steps, learning rate 1e-2);
    the subject file's tensors."""
    from safetensors.torch import load_file

    from customcrafter.cli import main

    photos = tmp_path / "photos"
    if not photos.exists():
        write_images(photos)
    argv = ["-q", "train", "--base", base, "--instance-data-dir", str(photos),
            "--output-dir", str(tmp_path / name), "--learning-rate", "1e-2",
            "--checkpointing-steps", "2", *extra]  # fmt: skip
    assert main(argv) == 0
    return load_file(str(tmp_path / name / "subject.safetensors"))


def launch(args: list[str], processes: int = 2, **kwargs) -> subprocess.Popen:
    """``customcrafter ARGS`` on ``processes`` CPU processes started by torchrun (what
    ``accelerate launch --multi_gpu`` runs too), one thread each: the machine has two
    cores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(processes), "-m", "customcrafter.cli", *args]  # fmt: skip
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def kill_tree(pid: int) -> None:
    """SIGKILL process ``pid`` and every process under it (torchrun starts its workers in
    sessions of their own, out of reach of a process-group kill)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            todo += [int(c) for c in (task / "children").read_text().split()]
    for each in found:
        os.kill(each, signal.SIGKILL)
