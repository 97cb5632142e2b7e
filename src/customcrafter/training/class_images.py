"""Class images (or clips) for prior preservation, generated with the base model itself and
cached.

The cache is keyed by the base model's fingerprints and the class prompt, so every subject of
the same class on the same base model reuses one set. Images are written one by one,
atomically; an interrupted generation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..io.files import atomic_path, slug
from ..io.video import write_video
from ..models.base import BaseVideoModel
from ..processes import state as processes
from ..sampling import CustomCrafterPipeline


def cache_root() -> Path:
    """``$CUSTOMCRAFTER_CACHE`` or ``~/.cache/customcrafter``."""
    return Path(os.environ.get("CUSTOMCRAFTER_CACHE", Path.home() / ".cache" / "customcrafter"))


def class_image_dir(model: BaseVideoModel, class_prompt: str, height: int, width: int) -> Path:
    return _cache_dir(model, "class_images", class_prompt, f"{height}x{width}")


def class_video_dir(
    model: BaseVideoModel, class_prompt: str, frames: int, height: int, width: int
) -> Path:
    return _cache_dir(model, "class_videos", class_prompt, f"{frames}x{height}x{width}")


def _cache_dir(model: BaseVideoModel, kind: str, class_prompt: str, size: str) -> Path:
    name = slug(class_prompt, 40)
    key = hashlib.sha256(
        f"{model.architecture_fingerprint()}|{model.weights_fingerprint()}|{class_prompt}|{size}".encode()
    ).hexdigest()[:12]
    return cache_root() / kind / f"{name}-{key}"


def ensure_class_images(
    model: BaseVideoModel,
    class_prompt: str,
    num_images: int,
    folder: Path,
    height: int,
    width: int,
    num_inference_steps: int = 50,
    progress: bool = True,
) -> list[Path]:
    """Generate the missing ones of ``num_images`` class images into ``folder``: image ``i``
    is the first frame of the base model's video for ``class_prompt`` with seed ``i``."""

    def save(video, path: Path) -> None:
        frame = (video[:, 0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        with atomic_path(path) as tmp:
            Image.fromarray(frame).save(tmp)

    settings = dict(num_inference_steps=num_inference_steps, height=height, width=width)
    paths = [folder / f"{i:05d}.png" for i in range(num_images)]
    return _generate(model, class_prompt, paths, save, "class images", progress, settings)


def ensure_class_videos(
    model: BaseVideoModel,
    class_prompt: str,
    num_videos: int,
    folder: Path,
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int = 50,
    progress: bool = True,
) -> list[Path]:
    """Generate the missing ones of ``num_videos`` class clips into ``folder``: clip ``i`` is
    the base model's ``num_frames``-frame video for ``class_prompt`` with seed ``i``, kept
    whole (with the motion the model gave it) as a lossless mp4."""

    def save(video, path: Path) -> None:
        write_video(path, video, lossless=True)

    paths = [folder / f"{i:05d}.mp4" for i in range(num_videos)]
    settings = dict(
        num_inference_steps=num_inference_steps, num_frames=num_frames, height=height, width=width
    )
    return _generate(model, class_prompt, paths, save, "class videos", progress, settings)


def _generate(model, class_prompt, paths, save, desc, progress, settings) -> list[Path]:
    """Sample the missing ``paths`` (file ``i`` from seed ``i``) and ``save(video, path)``
    each one as it comes: an interrupted generation resumes where it stopped. Under
    ``accelerate launch`` the missing ones are split across the processes (each file
    depends only on its seed) and every process returns once all are written."""
    state = processes()
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    state.wait_for_everyone()  # every process listed the folder before any writes to it
    if missing:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        with state.split_between_processes(missing) as mine:
            pipe = CustomCrafterPipeline(model)
            for i in tqdm(mine, desc=desc, disable=not progress):
                out = pipe(class_prompt, seed=i, progress=False, **settings)
                save(out.videos[0], paths[i])
    state.wait_for_everyone()
    return paths
