"""Class images for prior preservation, generated with the base model itself and cached.

The cache is keyed by the base model's fingerprints and the class prompt, so every subject of
the same class on the same base model reuses one set. Images are written one by one,
atomically; an interrupted generation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..io.files import atomic_path
from ..models.base import BaseVideoModel
from ..sampling import CustomCrafterPipeline


def cache_root() -> Path:
    """``$CUSTOMCRAFTER_CACHE`` or ``~/.cache/customcrafter``."""
    return Path(os.environ.get("CUSTOMCRAFTER_CACHE", Path.home() / ".cache" / "customcrafter"))


def class_image_dir(model: BaseVideoModel, class_prompt: str, height: int, width: int) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", class_prompt.lower()).strip("-")[:40]
    key = hashlib.sha256(
        f"{model.architecture_fingerprint()}|{model.weights_fingerprint()}|{class_prompt}|{height}x{width}".encode()
    ).hexdigest()[:12]
    return cache_root() / "class_images" / f"{slug}-{key}"


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
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.png" for i in range(num_images)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        pipe = CustomCrafterPipeline(model)
        for i in tqdm(missing, desc="class images", disable=not progress):
            out = pipe(
                class_prompt,
                num_inference_steps=num_inference_steps,
                height=height,
                width=width,
                seed=i,
                progress=False,
            )
            frame = (out.videos[0, :, 0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            with atomic_path(paths[i]) as tmp:
                Image.fromarray(frame).save(tmp)
    return paths
