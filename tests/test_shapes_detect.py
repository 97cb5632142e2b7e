"""The shapes-world detectors, checked against the ground truth the world renders."""

from __future__ import annotations

import numpy as np
import pytest

from customcrafter.shapes import detect
from customcrafter.shapes.world import (
    BACKGROUNDS,
    MOTIONS,
    OBJECT_COLORS,
    SPEED,
    SUBJECTS,
    ClipSpec,
    reference_images,
    render_clip,
    sample_clips,
)

COUNT = 200


def _blur(clips: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur over height and width (edges replicated), as float."""
    x = clips.astype(np.float32)
    for axis in (-3, -2):
        padded = np.concatenate(
            [np.take(x, [0], axis=axis), x, np.take(x, [-1], axis=axis)], axis=axis
        )
        n = x.shape[axis]
        parts = [np.take(padded, range(i, i + n), axis=axis) for i in range(3)]
        x = 0.25 * parts[0] + 0.5 * parts[1] + 0.25 * parts[2]
    return x


def _degrade(clips: np.ndarray, seed: int = 1, std: float = 15.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = _blur(clips) + rng.normal(0.0, std, clips.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _accuracy(clips, specs) -> dict[str, float]:
    """Fraction of clips whose background, color and motion are read as rendered."""
    readings = [detect.read_clip(clip) for clip in clips]
    pairs = list(zip(readings, specs, strict=True))
    return {
        key: float(np.mean([getattr(r, key) == getattr(s, key) for r, s in pairs]))
        for key in ("background", "color", "motion")
    }


@pytest.fixture(scope="module")
def world():
    clips, _, specs = sample_clips(COUNT, seed=123)
    return clips, specs


def test_nearest_color_exact_and_noisy():
    for name, rgb in {**OBJECT_COLORS, **BACKGROUNDS}.items():
        table = OBJECT_COLORS if name in OBJECT_COLORS else BACKGROUNDS
        assert detect.nearest_color(rgb, table) == (name, 0.0)
    name, distance = detect.nearest_color((200, 50, 40), OBJECT_COLORS)
    assert name == "red" and distance == pytest.approx(np.sqrt(15**2 + 15**2 + 5**2), rel=1e-5)


def test_palette_is_objects_then_backgrounds_without_repeats():
    assert list(detect.PALETTE)[: len(OBJECT_COLORS)] == list(OBJECT_COLORS)
    assert set(BACKGROUNDS) <= set(detect.PALETTE)
    values = list(detect.PALETTE.values())
    assert len(set(values)) == len(values)
    for subject in SUBJECTS.values():  # every pattern color is (close to) a palette color
        for rgb in (subject.color_a, subject.color_b):
            assert detect.nearest_color(rgb, detect.PALETTE)[1] < 20


def test_reads_rendered_clips(world):
    clips, specs = world
    accuracy = _accuracy(clips, specs)
    assert accuracy == {"background": 1.0, "color": 1.0, "motion": 1.0}


def test_displacement_matches_speed(world):
    clips, specs = world
    for clip, spec in zip(clips, specs, strict=True):
        expected = SPEED if spec.motion != "standing still" else 0.0
        assert detect.mean_displacement(clip) == pytest.approx(expected, abs=0.15), spec


def test_centroids_follow_the_motion(world):
    clips, specs = world
    for clip, spec in zip(clips[:40], specs[:40], strict=True):
        steps = np.diff(detect.centroids(clip), axis=0)
        assert np.allclose(steps.mean(axis=0), np.multiply(MOTIONS[spec.motion], SPEED), atol=0.2)


def test_reads_noisy_blurred_clips(world):
    clips, specs = world
    degraded = _degrade(clips)
    accuracy = _accuracy(degraded, specs)
    assert min(accuracy.values()) >= 0.95, accuracy
    for clip, spec in zip(degraded, specs, strict=True):
        displacement = detect.mean_displacement(clip)
        expected = SPEED if spec.motion != "standing still" else 0.0
        assert displacement == pytest.approx(expected, abs=0.5), spec


def test_object_fraction_matches_the_mask(world):
    clips, specs = world
    reading = detect.read_clip(clips[0])
    background = np.asarray(BACKGROUNDS[specs[0].background])
    truth = (clips[0] != background).any(axis=-1).mean()
    assert reading.object_fraction == pytest.approx(truth, abs=1e-6)


def test_blank_clip_has_no_object():
    clip = np.empty((8, 32, 32, 3), dtype=np.uint8)
    clip[:] = BACKGROUNDS["white"]
    assert np.isnan(detect.centroids(clip)).all()
    assert detect.object_color(clip) is None
    assert np.isnan(detect.mean_displacement(clip))
    reading = detect.read_clip(clip)
    assert (reading.background, reading.color, reading.object_fraction) == ("white", None, 0.0)
    assert reading.motion == "standing still"
    assert detect.palette_histogram(clip).sum() == 0.0


def test_lone_speckles_are_ignored():
    clip = np.empty((4, 32, 32, 3), dtype=np.uint8)
    clip[:] = BACKGROUNDS["black"]
    clip[:, 10, 20] = OBJECT_COLORS["red"]
    assert not detect.object_masks(clip).any()


@pytest.mark.parametrize(("size", "frames"), [(24, 4), (48, 6)])
def test_other_frame_sizes(size, frames):
    spec = ClipSpec("square", "blue", "moving down", "purple")
    clip = render_clip(spec, seed=5, frames=frames, size=size)
    reading = detect.read_clip(clip)
    assert (reading.background, reading.color, reading.motion) == ("purple", "blue", "moving down")
    assert reading.displacement == pytest.approx(SPEED, abs=0.1)
    assert detect.object_masks(clip).shape == (frames, size, size)
    frame = clip[0]  # a single frame reads as a one-frame clip
    assert detect.object_color(frame) == "blue" and detect.centroids(frame).shape == (1, 2)


def test_non_square_frames():
    clip = render_clip(ClipSpec("circle", "green", "moving right", "gray"), seed=2)
    wide = np.concatenate([clip, np.broadcast_to(clip[:, :, -1:], (8, 32, 16, 3))], axis=2)
    reading = detect.read_clip(wide)
    assert (reading.background, reading.color, reading.motion) == ("gray", "green", "moving right")


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_subject_matches_its_references(name):
    subject = SUBJECTS[name]
    references = reference_images(subject)
    for background in BACKGROUNDS:
        spec = ClipSpec(subject.class_word, name, "moving left", background)
        clip = render_clip(spec, seed=3, subject=subject)
        # on black, the smiley's black face is background: only its green part is seen
        floor = 0.75 if (name, background) == ("smiley", "black") else 0.8
        assert detect.subject_similarity(clip, references) > floor, background


@pytest.mark.parametrize("name", ["striped-star", "checkered-ring"])
def test_plain_class_object_scores_lower(name):
    subject = SUBJECTS[name]
    references = reference_images(subject)
    for color in OBJECT_COLORS:
        spec = ClipSpec(subject.class_word, color, "moving right", "gray")
        score = detect.subject_similarity(render_clip(spec, seed=4), references)
        in_pattern = OBJECT_COLORS[color] in (subject.color_a, subject.color_b)
        assert score < (0.65 if in_pattern else 0.05), (color, score)


def test_histograms_are_distributions():
    clip = render_clip(ClipSpec("star", "striped-star", "moving up", "white"), seed=0,
                       subject=SUBJECTS["striped-star"])  # fmt: skip
    histogram = detect.palette_histogram(clip)
    assert histogram.shape == (len(detect.PALETTE),)
    assert histogram.sum() == pytest.approx(1.0) and (histogram >= 0).all()
    same = detect.palette_histogram(list(clip))  # a list of frames pools the same pixels
    assert np.allclose(histogram, same)
