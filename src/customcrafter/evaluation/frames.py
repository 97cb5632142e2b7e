"""What the metrics take: videos as uint8 ``[f, h, w, 3]`` arrays or lists of PIL images,
images as PIL images or uint8 ``[h, w, 3]`` arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import UserError

ImageLike = Image.Image | np.ndarray
VideoLike = np.ndarray | Sequence[Image.Image]


def to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise UserError(
            f"expected a PIL image or a uint8 [h, w, 3] array, got {array.dtype} {array.shape}"
        )
    return Image.fromarray(array).convert("RGB")


def image_list(images: VideoLike | ImageLike | Sequence[ImageLike]) -> list[Image.Image]:
    """A video array ``[f, h, w, 3]``, one image, or a sequence of images -> PIL images."""
    if isinstance(images, Image.Image):
        return [to_pil(images)]
    if isinstance(images, np.ndarray):
        return [to_pil(frame) for frame in (images if images.ndim == 4 else [images])]
    return [to_pil(image) for image in images]


def video_array(video: VideoLike) -> np.ndarray:
    """The video as a uint8 array ``[f, h, w, 3]``."""
    if isinstance(video, np.ndarray):
        frames = video
    else:
        pictures = [np.asarray(to_pil(frame)) for frame in video]
        if len({p.shape for p in pictures}) > 1:
            raise UserError("the video's frames differ in size")
        frames = np.stack(pictures) if pictures else np.zeros((0, 0, 0, 3), np.uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"expected a uint8 video [f, h, w, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise UserError("the video has no frames")
    return frames
