"""Reading photos: the subject's, the class images, the references of an evaluation."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def list_images(folder: str | Path, what: str = "image") -> list[Path]:
    """Readable image files in ``folder``, sorted; non-images are skipped with a warning."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} is not a folder")
    images = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            with Image.open(path) as img:
                img.verify()
            images.append(path)
        except (UnidentifiedImageError, OSError):
            logger.warning("skipping %s: not an image file", path)
    if not images:
        raise UserError(
            f"{what} folder {folder} holds no images (jpg, png or webp); put 3 to 10 photos of the subject there"
        )
    return images


def load_image(path: str | Path) -> Image.Image:
    """An RGB image with its EXIF orientation applied."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")
