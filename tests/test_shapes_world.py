"""The shapes world: deterministic clips, one vocabulary, a held-out split, bundled subjects."""

import numpy as np
from PIL import Image

from customcrafter.shapes.world import (
    BACKGROUNDS,
    MOTIONS,
    OBJECT_COLORS,
    SHAPES,
    SUBJECTS,
    SUBJECTS_DIR,
    all_specs,
    held_out_specs,
    is_held_out,
    random_spec,
    reference_images,
    render_clip,
    sample_clips,
    vocabulary,
)


def test_clips_are_deterministic_from_the_seed_and_captioned_from_the_vocabulary():
    a, captions, specs = sample_clips(16, seed=3)
    b, _, _ = sample_clips(16, seed=3)
    assert a.shape == (16, 8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, sample_clips(16, seed=4)[0])
    words = set(vocabulary())
    for caption, spec in zip(captions, specs, strict=True):
        assert set(caption.split()) <= words
        assert (
            caption
            == f"a {spec.color} {spec.shape} {spec.motion} on a {spec.background} background"
        )


def test_objects_move_as_the_caption_says_and_stay_in_the_frame():
    for motion, (ux, uy) in MOTIONS.items():
        spec = random_spec(np.random.default_rng(0))
        spec = type(spec)(spec.shape, "red", motion, "black")
        clip = render_clip(spec, seed=5)
        masks = (clip == OBJECT_COLORS["red"]).all(-1)
        ys, xs = np.nonzero(masks[0])
        ye, xe = np.nonzero(masks[-1])
        assert np.sign(round(xe.mean() - xs.mean())) == ux
        assert np.sign(round(ye.mean() - ys.mean())) == uy
        # the whole object is visible in every frame: it never touches the border
        assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()


def test_the_held_out_split_is_never_drawn_for_training():
    held = held_out_specs()
    assert 0 < len(held) < len(all_specs()) == len(SHAPES) * 4 * len(MOTIONS) * len(BACKGROUNDS)
    rng = np.random.default_rng(0)
    assert not any(is_held_out(random_spec(rng)) for _ in range(2000))
    assert all(is_held_out(random_spec(rng, held_out=True)) for _ in range(50))


def test_bundled_reference_images_are_the_worlds_and_subjects_are_patterned():
    for name, subject in SUBJECTS.items():
        files = sorted((SUBJECTS_DIR / name).glob("*.png"))
        assert 4 <= len(files) <= 6
        for path, image in zip(files, reference_images(subject), strict=True):
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)
        assert subject.class_word in SHAPES  # a word the base model knows
        # two colors on the object, which plain world objects never have
        image = reference_images(subject)[0]
        assert (image == subject.color_a).all(-1).any() and (image == subject.color_b).all(-1).any()
