"""Training data: subject photos become static clips with captions and loss masks; class
videos (for prior preservation, optionally) stay the moving clips they are.

Each image is center-cropped to the model's aspect ratio, resized, optionally augmented as
Custom Diffusion and the authors do (random rescale with a matching caption prefix and a
loss mask over the image area, horizontal flip), then repeated into an ``N``-frame clip.
All randomness comes from a ``numpy.random.Generator`` the caller seeds, so a batch is a
pure function of (seed, step): resuming training replays exactly the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from ..io.images import load_image
from ..io.video import read_video

# the authors' caption templates for a subject phrase such as "<new1> dog"
CAPTION_TEMPLATES = ("video of a {}", "{}", "a static video of a {}", "a {}")
SMALL_PREFIXES = ("a far away ", "very small ")
LARGE_PREFIXES = ("zoomed in ", "close up ")


def center_crop_resize(img: Image.Image, height: int, width: int) -> Image.Image:
    """Crop the largest centered region with the target aspect ratio, then resize."""
    w, h = img.size
    scale = min(w / width, h / height)
    cw, ch = round(width * scale), round(height * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """``[3, h, w]`` float in ``[-1, 1]`` from an 8-bit RGB image (or ``[h, w, 3]`` array)."""
    array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def augment(
    img: Image.Image, prompt: str, rng: np.random.Generator, latent_factor: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Custom Diffusion's rescale augmentation on an image already at the target size.

    With probability 2/3 the subject is shrunk to 30-100 % of the frame; below 60 % it is
    pasted at a random place on black, the caption gets "a far away" / "very small" and the
    loss mask covers only the pasted area. Otherwise it is enlarged to 120-140 % and a random
    crop taken ("zoomed in" / "close up"). Returns the image ``[3, h, w]``, the mask
    ``[h / latent_factor, w / latent_factor]`` and the caption.
    """
    width, height = img.size
    lh, lw = height // latent_factor, width // latent_factor
    mask = torch.ones(lh, lw)
    factor = rng.integers(3, 11) / 10 if rng.integers(0, 3) < 2 else rng.integers(12, 15) / 10
    new_h = max(2, int(factor * height) // 2 * 2)
    new_w = max(2, int(new_h * width / height) // 2 * 2)
    if new_h < 0.6 * height:
        prompt = SMALL_PREFIXES[rng.integers(0, 2)] + prompt
        x = int(rng.integers(0, width - new_w + 1))
        y = int(rng.integers(0, height - new_h + 1))
        canvas = Image.new("RGB", (width, height))
        canvas.paste(img.resize((new_w, new_h), Image.BICUBIC), (x, y))
        img = canvas
        # the loss covers the latent cells that lie wholly inside the pasted image
        mask = torch.zeros(lh, lw)
        top, left = -(-y // latent_factor), -(-x // latent_factor)
        mask[top : (y + new_h) // latent_factor, left : (x + new_w) // latent_factor] = 1
    elif new_h > height:
        prompt = LARGE_PREFIXES[rng.integers(0, 2)] + prompt
        x = int(rng.integers(0, new_w - width + 1))
        y = int(rng.integers(0, new_h - height + 1))
        img = img.resize((new_w, new_h), Image.BICUBIC).crop((x, y, x + width, y + height))
    return to_tensor(img), mask, prompt


@dataclass
class StaticClipBatch:
    """``pixels`` ``[b, 3, f, h, w]`` in ``[-1, 1]``, ``masks`` ``[b, 1, f, h/s, w/s]``,
    ``prompts`` ``b`` captions."""

    pixels: torch.Tensor
    masks: torch.Tensor
    prompts: list[str]


class SubjectImages:
    """The subject's photos (and optionally class photos) ready to become training clips."""

    def __init__(
        self,
        paths: list[Path],
        height: int,
        width: int,
        num_frames: int,
        latent_factor: int,
        prompt: str,
        templates: tuple[str, ...] | None = None,
        augment: bool = False,
    ):
        self.images = [center_crop_resize(load_image(p), height, width) for p in paths]
        self.height, self.width = height, width
        self.num_frames = num_frames
        self.latent_factor = latent_factor
        self.prompt = prompt
        self.templates = templates
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int, rng: np.random.Generator) -> StaticClipBatch:
        views = [self.view(int(rng.integers(0, len(self))), rng) for _ in range(batch_size)]
        return stack_views(views)

    def view(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Photo ``index`` as one training clip: pixels ``[3, f, h, w]``, mask
        ``[1, f, h/s, w/s]`` and caption, augmented (with ``augment``) by draws from ``rng``."""
        img = self.images[index]
        prompt = (
            self.templates[rng.integers(0, len(self.templates))].format(self.prompt)
            if self.templates
            else self.prompt
        )
        if self.augment:
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            image, mask, prompt = augment(img, prompt, rng, self.latent_factor)
        else:
            image = to_tensor(img)
            mask = torch.ones(self.height // self.latent_factor, self.width // self.latent_factor)
        pixels = image.unsqueeze(1).expand(-1, self.num_frames, -1, -1)
        return pixels, mask.expand(1, self.num_frames, -1, -1), prompt


def stack_views(views: list[tuple[torch.Tensor, torch.Tensor, str]]) -> StaticClipBatch:
    pixels, masks, prompts = zip(*views, strict=True)
    return StaticClipBatch(torch.stack(pixels), torch.stack(masks), list(prompts))


class ClassClips:
    """Videos of the subject's class (prior preservation on moving clips): each frame
    center-cropped and resized as the photos are, a random window of ``num_frames``
    consecutive frames per sample, the whole frame in the loss."""

    def __init__(
        self,
        paths: list[Path],
        height: int,
        width: int,
        num_frames: int,
        latent_factor: int,
        prompt: str,
    ):
        self.clips = []
        for path in paths:
            frames = read_video(path)
            if len(frames) < num_frames:
                raise UserError(
                    f"class video {path} has {len(frames)} frames, fewer than --train-frames "
                    f"{num_frames}; give longer videos or lower --train-frames"
                )
            # kept as 8-bit frames (a quarter of float32's memory), made tensors per sample
            images = [center_crop_resize(Image.fromarray(f), height, width) for f in frames]
            self.clips.append(np.stack([np.asarray(i) for i in images]))
        self.num_frames = num_frames
        self.mask_shape = (1, num_frames, height // latent_factor, width // latent_factor)
        self.prompt = prompt

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, batch_size: int, rng: np.random.Generator) -> StaticClipBatch:
        views = [self.view(int(rng.integers(0, len(self))), rng) for _ in range(batch_size)]
        return stack_views(views)

    def view(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A random window of clip ``index``: pixels ``[3, f, h, w]``, mask, caption."""
        clip = self.clips[index]
        start = int(rng.integers(0, len(clip) - self.num_frames + 1))
        window = clip[start : start + self.num_frames]
        pixels = torch.stack([to_tensor(f) for f in window], dim=1)
        return pixels, torch.ones(*self.mask_shape), self.prompt
