"""The shapes world: short captioned clips of one colored shape moving over a background.

Everything the world can say lives in the tables below; clips are drawn with numpy,
deterministically from a seed. A clip is ``uint8 [frames, size, size, 3]``; its caption
comes from one template::

    "a red circle moving left on a blue background"

Subjects are patterned objects (a striped star, a checkered ring, a face) that the base
model never sees; each has a class word the base model knows and a few static reference
images.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAMES = 8
SIZE = 32

#: object colors (RGB); far from every background color so detectors can segment by color
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 175, 60),
    "blue": (40, 90, 235),
    "yellow": (240, 210, 40),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (125, 125, 125),
    "purple": (110, 30, 130),
}
SHAPES = ("circle", "square", "triangle", "star", "ring")
#: motion phrase -> unit direction (x right, y down), in pixels per frame times SPEED
MOTIONS: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0),
    "moving right": (1, 0),
    "moving up": (0, -1),
    "moving down": (0, 1),
    "standing still": (0, 0),
}
SPEED = 2.0  # pixels per frame
RADIUS_RANGE = (5.0, 7.0)
TEMPLATE = "a {color} {shape} {motion} on a {background} background"


@dataclass(frozen=True)
class ClipSpec:
    """What one clip shows; ``color`` is a color name or a subject's name."""

    shape: str
    color: str
    motion: str
    background: str

    @property
    def caption(self) -> str:
        return caption(self.color, self.shape, self.motion, self.background)


def caption(color: str, shape: str, motion: str, background: str) -> str:
    return TEMPLATE.format(color=color, shape=shape, motion=motion, background=background)


def vocabulary() -> list[str]:
    """Every word a caption can hold, in a fixed order."""
    words: list[str] = []
    for text in (
        TEMPLATE.replace("{", " ").replace("}", " "),
        *OBJECT_COLORS,
        *BACKGROUNDS,
        *SHAPES,
        *MOTIONS,
    ):
        for word in text.split():
            if word not in words and word not in ("color", "shape", "motion"):
                words.append(word)
    return words


# --- drawing ---------------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int = SIZE) -> np.ndarray:
    """Boolean ``[size, size]`` mask of ``shape`` centered at ``(cx, cy)`` with radius ``r``."""
    xs, ys = _grid(size)
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        half = r * 0.85
        return (abs(dx) <= half) & (abs(dy) <= half)
    if shape == "triangle":  # pointing up, base at the bottom
        top, bottom = -r, r * 0.8
        inside_y = (dy >= top) & (dy <= bottom)
        half_width = (dy - top) / (bottom - top) * r
        return inside_y & (abs(dx) <= half_width)
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.5 * r) ** 2)
    if shape == "star":  # five points: radius alternating between r and 0.45 r
        angle = np.arctan2(dy, dx) + np.pi / 2
        sector = (angle % (2 * np.pi / 5)) / (2 * np.pi / 5)  # 0..1 within a point
        tri = abs(sector - 0.5) * 2  # 1 at the tips, 0 between them
        limit = 0.45 * r + (r - 0.45 * r) * tri
        return np.sqrt(dx**2 + dy**2) <= limit
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


@dataclass(frozen=True)
class Subject:
    """A patterned object the base model has never seen."""

    name: str
    class_word: str
    description: str
    #: ``(pattern, color_a, color_b)``; pattern is "stripes", "checker" or "face"
    pattern: str
    color_a: tuple[int, int, int]
    color_b: tuple[int, int, int]
    #: size of the pattern's bands, cells or features, as a fraction of the radius
    scale: float = 0.5

    def paint(self, canvas: np.ndarray, cx: float, cy: float, r: float) -> None:
        """Draw the subject onto ``canvas`` ``[size, size, 3]`` in place."""
        size = canvas.shape[0]
        mask = shape_mask(self.class_word, cx, cy, r, size)
        xs, ys = _grid(size)
        cell = r * self.scale
        if self.pattern == "stripes":  # horizontal bands of height `cell`
            band = np.floor((ys - cy + r) / cell).astype(int) % 2 == 0
        elif self.pattern == "checker":
            band = (np.floor((xs - cx) / cell) + np.floor((ys - cy) / cell)).astype(int) % 2 == 0
        elif self.pattern == "face":  # eyes and a mouth in color_b, sized by `scale`
            k = self.scale / 0.5
            eye = (0.18 * k * r) ** 2
            eyes = ((xs - (cx - 0.4 * r)) ** 2 + (ys - (cy - 0.3 * r)) ** 2 <= eye) | (
                (xs - (cx + 0.4 * r)) ** 2 + (ys - (cy - 0.3 * r)) ** 2 <= eye
            )
            mouth = (abs(ys - (cy + 0.4 * r)) <= 0.12 * k * r) & (abs(xs - cx) <= 0.45 * r)
            band = ~(eyes | mouth)
        else:
            raise ValueError(f"unknown pattern {self.pattern!r}")
        canvas[mask & band] = self.color_a
        canvas[mask & ~band] = self.color_b


SUBJECTS: dict[str, Subject] = {
    s.name: s
    for s in (
        Subject(
            "striped-star", "star", "a star with a yellow band over a red one", "stripes",
            (240, 210, 40), (215, 35, 35), 1.0,
        ),
        Subject(
            "checkered-ring", "ring", "a ring in blue and yellow quarters", "checker",
            (40, 90, 235), (240, 210, 40), 1.0,
        ),
        Subject(
            "smiley", "circle", "a green disk with a large black face", "face",
            (40, 175, 60), (20, 20, 20), 0.8,
        ),
    )
}  # fmt: skip
#: the subjects' reference images as PNG files, one folder per subject (``reference_images``)
SUBJECTS_DIR = Path(__file__).resolve().parent / "subjects"
#: backgrounds of the subjects' reference images; prompts on the others test composition
REFERENCE_BACKGROUNDS = ("gray", "white", "black")


def _trajectory(rng: np.random.Generator, motion: str, r: float, frames: int, size: int):
    """Centers ``[(x, y)] * frames`` that keep the whole object inside the frame."""
    ux, uy = MOTIONS[motion]
    travel = SPEED * (frames - 1)
    lo, hi = r + 1.0, size - r - 1.0

    def start(u: int) -> float:
        if u > 0:
            return rng.uniform(lo, hi - travel)
        if u < 0:
            return rng.uniform(lo + travel, hi)
        return rng.uniform(lo, hi)

    x0, y0 = start(ux), start(uy)
    return [(x0 + ux * SPEED * i, y0 + uy * SPEED * i) for i in range(frames)]


def render_clip(
    spec: ClipSpec,
    seed: int,
    frames: int = FRAMES,
    size: int = SIZE,
    subject: Subject | None = None,
) -> np.ndarray:
    """``uint8 [frames, size, size, 3]``: ``spec``'s object (or ``subject``) on its
    background, with random size and start position drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(*RADIUS_RANGE)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i, (cx, cy) in enumerate(_trajectory(rng, spec.motion, r, frames, size)):
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = BACKGROUNDS[spec.background]
        if subject is not None:
            subject.paint(canvas, cx, cy, r)
        else:
            canvas[shape_mask(spec.shape, cx, cy, r, size)] = OBJECT_COLORS[spec.color]
        out[i] = canvas
    return out


def all_specs() -> list[ClipSpec]:
    """Every combination of shape, color, motion and background, in a fixed order."""
    return [
        ClipSpec(shape, color, motion, background)
        for shape in SHAPES
        for color in OBJECT_COLORS
        for motion in MOTIONS
        for background in BACKGROUNDS
    ]


def is_held_out(spec: ClipSpec) -> bool:
    """One combination in ten (by a stable hash of its caption) is never trained on, so the
    base model's prompt following is measured on captions it has not seen."""
    return zlib.crc32(spec.caption.encode()) % 10 == 0


def held_out_specs() -> list[ClipSpec]:
    return [s for s in all_specs() if is_held_out(s)]


def random_spec(rng: np.random.Generator, held_out: bool = False) -> ClipSpec:
    """A random combination from the training split (or the held-out one)."""
    while True:
        spec = ClipSpec(
            shape=str(rng.choice(SHAPES)),
            color=str(rng.choice(list(OBJECT_COLORS))),
            motion=str(rng.choice(list(MOTIONS))),
            background=str(rng.choice(list(BACKGROUNDS))),
        )
        if is_held_out(spec) == held_out:
            return spec


def sample_clips(count: int, seed: int, frames: int = FRAMES, size: int = SIZE):
    """``count`` random base-world clips ``uint8 [n, frames, size, size, 3]`` and captions
    (training split)."""
    rng = np.random.default_rng(seed)
    specs = [random_spec(rng) for _ in range(count)]
    seeds = rng.integers(0, 2**31, count)
    clips = np.stack(
        [render_clip(s, int(k), frames, size) for s, k in zip(specs, seeds, strict=True)]
    )
    return clips, [s.caption for s in specs], specs


def reference_images(subject: Subject, count: int = 5, seed: int = 0, size: int = SIZE):
    """``count`` static images ``uint8 [size, size, 3]`` of ``subject``: varied position,
    size and background (the reference backgrounds only)."""
    rng = np.random.default_rng([seed, sum(map(ord, subject.name))])
    images = []
    for i in range(count):
        background = REFERENCE_BACKGROUNDS[i % len(REFERENCE_BACKGROUNDS)]
        r = rng.uniform(6.0, 9.0)
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        canvas = np.empty((size, size, 3), dtype=np.uint8)
        canvas[:] = BACKGROUNDS[background]
        subject.paint(canvas, cx, cy, r)
        images.append(canvas)
    return images
