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
