"""Detectors that read a shapes-world clip and say what it shows.

The clips they read come from a diffusion model, so colors are noisy and blurry rather than
the exact table values of :mod:`customcrafter.shapes.world`. Every reading therefore goes
through robust statistics (medians, least-squares fits) and nearest-table-entry lookups.

All functions take ``uint8`` arrays: a clip ``[frames, h, w, 3]`` or a single frame
``[h, w, 3]``, which is read as a one-frame clip. Any ``h, w`` works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from customcrafter.shapes.world import BACKGROUNDS, MOTIONS, OBJECT_COLORS, SUBJECTS

#: A pixel belongs to the object when its RGB distance from the background exceeds this.
#: The closest object/background pair in the tables (green on gray) is ~118 apart, so 60 sits
#: about midway: blur or noise must move a pixel half that gap to flip it. Gaussian noise of
#: std 15 per channel exceeds 60 in norm for only ~0.1% of pixels, and those lone pixels are
#: removed by the neighbour filter below.
OBJECT_THRESHOLD = 60.0
#: An object pixel needs at least this many object pixels among its 8 neighbours.
MIN_NEIGHBOURS = 2
#: A frame whose mask has fewer pixels than this is treated as empty (speckles, not an object).
MIN_OBJECT_PIXELS = 3
#: Below this speed (px/frame) a clip is "standing still"; the world's SPEED is 2.0.
STILL_SPEED = 0.5
#: Width of the border ring whose median color is the background.
BORDER = 2
#: Object pixels farther than this from every PALETTE color are left out of palette
#: histograms: they are blends (blurred edges against the background, blurred boundaries
#: between pattern colors) whose nearest color says little about the subject. Same scale as
#: OBJECT_THRESHOLD: std-15 noise alone rarely moves a pixel this far.
PALETTE_TOLERANCE = 60.0
#: Palette colors closer than this to an earlier entry are merged into it.
_MERGE_DISTANCE = 20.0


def _build_palette() -> dict[str, tuple[int, int, int]]:
    """OBJECT_COLORS, then BACKGROUNDS, then the subjects' pattern colors, without repeats.

    Subject colors are mostly the object colors again; the smiley's dark features
    (20, 20, 20) are within a few units of black, so they are merged into black rather than
    getting an entry that noise would split at random from black.
    """
    palette: dict[str, tuple[int, int, int]] = {}
    candidates = [*OBJECT_COLORS.items(), *BACKGROUNDS.items()]
    for subject in SUBJECTS.values():
        candidates += [
            (f"{subject.name}-a", subject.color_a),
            (f"{subject.name}-b", subject.color_b),
        ]
    for name, rgb in candidates:
        if name in palette:
            continue
        if any(np.linalg.norm(np.subtract(rgb, v)) < _MERGE_DISTANCE for v in palette.values()):
            continue
        palette[name] = tuple(int(c) for c in rgb)
    return palette


#: Fixed, ordered palette for subject-fidelity histograms.
PALETTE: dict[str, tuple[int, int, int]] = _build_palette()


# --- helpers ---------------------------------------------------------------------------------
def _as_clip(clip: np.ndarray) -> np.ndarray:
    """``float32 [f, h, w, 3]`` view of a clip or a single frame."""
    array = np.asarray(clip)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected [f, h, w, 3] or [h, w, 3], got shape {array.shape}")
    return array.astype(np.float32)


def _border_pixels(clip: np.ndarray) -> np.ndarray:
    """``[n, 3]`` pixels of the outer ``BORDER``-pixel ring of every frame."""
    h, w = clip.shape[1:3]
    ring = np.zeros((h, w), dtype=bool)
    ring[:BORDER] = ring[-BORDER:] = True
    ring[:, :BORDER] = ring[:, -BORDER:] = True
    return clip[:, ring].reshape(-1, 3)


def _neighbour_count(mask: np.ndarray) -> np.ndarray:
    """Number of set 8-neighbours of every pixel of ``mask`` ``[f, h, w]``."""
    h, w = mask.shape[1:]
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1))).astype(np.int8)
    total = np.zeros(mask.shape, dtype=np.int8)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                total += padded[:, dy : dy + h, dx : dx + w]
    return total


def nearest_color(rgb, table: Mapping[str, tuple]) -> tuple[str, float]:
    """Name and Euclidean RGB distance of the entry of ``table`` nearest to ``rgb``."""
    names = list(table)
    values = np.asarray([table[n] for n in names], dtype=np.float32)
    distances = np.linalg.norm(values - np.asarray(rgb, dtype=np.float32), axis=1)
    best = int(np.argmin(distances))
    return names[best], float(distances[best])


# --- background and object -------------------------------------------------------------------
def border_color(clip: np.ndarray) -> np.ndarray:
    """``float32 [3]``: median color of the border ring over all frames."""
    return np.median(_border_pixels(_as_clip(clip)), axis=0)


def background_color(clip: np.ndarray) -> str:
    """Name of the BACKGROUNDS entry nearest to the clip's border color."""
    return nearest_color(border_color(clip), BACKGROUNDS)[0]


def object_masks(clip: np.ndarray, background_rgb=None) -> np.ndarray:
    """``bool [f, h, w]``: pixels farther than OBJECT_THRESHOLD from the background.

    ``background_rgb`` is an RGB triple; by default the clip's own border median (not snapped
    to the table, so a generated clip with shifted colors is measured against itself). Lone
    pixels (fewer than MIN_NEIGHBOURS set neighbours) are dropped, and so is the whole mask
    of a frame left with fewer than MIN_OBJECT_PIXELS pixels.
    """
    frames = _as_clip(clip)
    if background_rgb is None:
        background_rgb = border_color(frames)
    distance = np.linalg.norm(frames - np.asarray(background_rgb, dtype=np.float32), axis=-1)
    mask = distance > OBJECT_THRESHOLD
    mask &= _neighbour_count(mask) >= MIN_NEIGHBOURS
    mask[mask.sum(axis=(1, 2)) < MIN_OBJECT_PIXELS] = False
    return mask


def object_color(clip: np.ndarray) -> str | None:
    """Name of the OBJECT_COLORS entry nearest to the median object pixel; None if none."""
    frames = _as_clip(clip)
    pixels = frames[object_masks(frames)]
    if len(pixels) == 0:
        return None
    return nearest_color(np.median(pixels, axis=0), OBJECT_COLORS)[0]


# --- motion ----------------------------------------------------------------------------------
def centroids(clip: np.ndarray) -> np.ndarray:
    """``float [f, 2]``: ``(x, y)`` object centroid per frame in pixel coordinates (pixel
    centers at ``i + 0.5``, as in world.py); NaN where a frame has no object."""
    mask = object_masks(clip)
    h, w = mask.shape[1:]
    counts = mask.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (mask.sum(axis=1) @ (np.arange(w) + 0.5)) / counts
        y = (mask.sum(axis=2) @ (np.arange(h) + 0.5)) / counts
    return np.stack([x, y], axis=1)


def velocity(clip: np.ndarray) -> tuple[float, float]:
    """``(vx, vy)`` px/frame: least-squares slope of the centroid track over frames, NaN
    frames left out; ``(nan, nan)`` with fewer than two frames showing the object."""
    track = centroids(clip)
    valid = ~np.isnan(track).any(axis=1)
    if valid.sum() < 2:
        return float("nan"), float("nan")
    t = np.flatnonzero(valid).astype(np.float64)
    slopes = np.polyfit(t, track[valid], 1)[0]
    return float(slopes[0]), float(slopes[1])


def motion_direction(clip: np.ndarray) -> str:
    """One of the MOTIONS keys. Slower than STILL_SPEED (or no trackable object) is
    "standing still"; otherwise the dominant axis of the velocity (y grows downward)."""
    vx, vy = velocity(clip)
    if np.isnan(vx) or np.hypot(vx, vy) < STILL_SPEED:
        return "standing still"
    direction = (int(np.sign(vx)), 0) if abs(vx) >= abs(vy) else (0, int(np.sign(vy)))
    return next(name for name, unit in MOTIONS.items() if unit == direction)


def mean_displacement(clip: np.ndarray) -> float:
    """Mean centroid step length (px/frame) over consecutive frame pairs where both frames
    show the object; NaN if there is no such pair."""
    steps = np.linalg.norm(np.diff(centroids(clip), axis=0), axis=1)
    steps = steps[~np.isnan(steps)]
    return float(steps.mean()) if len(steps) else float("nan")


# --- whole-clip reading ----------------------------------------------------------------------
@dataclass(frozen=True)
class ClipReading:
    """What the detectors read from one clip."""

    background: str
    color: str | None
    motion: str
    displacement: float  # mean px/frame, NaN without an object in two consecutive frames
    object_fraction: float  # mean fraction of a frame's pixels that are object


def read_clip(clip: np.ndarray) -> ClipReading:
    """Run every detector on ``clip``."""
    frames = _as_clip(clip)
    return ClipReading(
        background=background_color(frames),
        color=object_color(frames),
        motion=motion_direction(frames),
        displacement=mean_displacement(frames),
        object_fraction=float(object_masks(frames).mean()),
    )


# --- subject fidelity ------------------------------------------------------------------------
def palette_histogram(clip_or_images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``float [len(PALETTE)]``: fraction of object pixels nearest to each PALETTE color.

    Takes a clip, a frame or a list of images; each frame/image is segmented against its own
    border color. Pixels farther than PALETTE_TOLERANCE from every palette color are not
    counted. All zeros when no pixel is counted.
    """
    if isinstance(clip_or_images, np.ndarray):
        images = list(_as_clip(clip_or_images))
    else:
        images = [image for item in clip_or_images for image in _as_clip(item)]
    palette = np.asarray(list(PALETTE.values()), dtype=np.float32)
    counts = np.zeros(len(palette))
    for image in images:
        pixels = image[object_masks(image)[0]]
        distance = np.linalg.norm(pixels[:, None] - palette[None], axis=-1)
        nearest = distance.argmin(axis=1)[distance.min(axis=1) <= PALETTE_TOLERANCE]
        counts += np.bincount(nearest, minlength=len(palette))
    total = counts.sum()
    return counts / total if total else counts


def subject_similarity(clip: np.ndarray, references: Sequence[np.ndarray]) -> float:
    """Histogram intersection in ``[0, 1]`` of the palette histograms of ``clip``'s object
    pixels and of all ``references`` pooled.

    Why this measures subject fidelity here: a subject is drawn with the same outline as its
    class word (a striped star is a star), so shape cannot tell them apart; what sets a
    subject apart is exactly its two pattern colors and their shares. A plain yellow star
    scores about the yellow share of the striped star (~0.5), the subject itself about 1,
    and an object of some other color about 0. Position, size, motion and background hardly
    enter, since only object pixels are counted.

    Limits: the smiley is ~90% green, so a plain green circle scores ~0.9 against it too.
    Fine patterns do not survive blur: blue and yellow checker cells of ~3 px blend into
    a color near gray, so a blurred checkered ring loses much of its score.
    """
    return float(np.minimum(palette_histogram(clip), palette_histogram(references)).sum())
