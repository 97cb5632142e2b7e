"""Reading photos: the subject's, the class images, the references of an evaluation.

Every photo is decoded in full when a folder is listed, so a damaged or oversized file is
reported, by name, before any model is loaded; every pixel format becomes 8-bit RGB the way
it looks (16-bit greyscale scaled, transparency over white).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
#: photos larger than this are refused rather than decoded (a 4K photo is 8 megapixels)
MAX_MEGAPIXELS = 100
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def list_images(folder: str | Path, what: str = "image") -> list[Path]:
    """The photos in ``folder``, sorted, each decoded once to check it. Files that are not
    images are skipped with a warning; a damaged or oversized photo is a ``UserError``."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} is not a folder")
    images = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in IMAGE_SUFFIXES and not _looks_like_an_image(path):
            logger.warning("skipping %s: not an image file", path)
            continue
        load_image(path)
        images.append(path)
    if not images:
        raise UserError(
            f"{what} folder {folder} holds no images (jpg, png or webp); "
            "put 3 to 10 photos of the subject there"
        )
    return images


def load_image(path: str | Path) -> Image.Image:
    """An 8-bit RGB image with its EXIF orientation applied."""
    path = Path(path)
    limit = MAX_MEGAPIXELS * 1_000_000
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > limit:
                    raise UserError(
                        f"photo {path} is {width}x{height} pixels, more than {MAX_MEGAPIXELS} "
                        "megapixels; scale it down first"
                    )
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"photo {path} is too large to decode ({exc}); scale it down") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"photo {path} could not be read ({exc}); replace or remove it") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode: 16-bit and float greyscale scaled to 0-255 (Pillow's own
    conversion clips them at 255, which turns most of a 16-bit photo white), transparent
    pixels shown over white."""
    if img.mode in _WIDE_MODES:
        values = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and values.size and values.max() <= 1.0:
            values = values * 255.0
        elif img.mode != "F" or (values.size and values.max() > 255.0):
            values = values / 257.0
        img = Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def _looks_like_an_image(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is not an image
        return False
