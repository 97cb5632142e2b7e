"""Subject photos become static clips: orientation, cropping, augmentation, masks, captions."""

import numpy as np
import pytest
import torch
from PIL import Image

from customcrafter.errors import UserError
from customcrafter.io.images import list_images, load_image
from customcrafter.prompts import subject_phrase
from customcrafter.training.data import (
    CAPTION_TEMPLATES,
    SubjectImages,
    augment,
    center_crop_resize,
)


def test_non_images_are_skipped_and_an_imageless_folder_is_an_error(tmp_path, caplog):
    (tmp_path / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.webp")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    assert [p.name for p in list_images(tmp_path)] == ["a.webp", "b.jpg"]
    assert "notes.txt" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no images"):
        list_images(empty)
    with pytest.raises(UserError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_center_crop_keeps_the_middle_at_the_target_aspect():
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 50:150] = 255  # the central square is white, the sides black
    out = np.asarray(center_crop_resize(Image.fromarray(array), 32, 32))
    assert out.shape == (32, 32, 3) and out.min() > 200


def test_shrunk_subject_gets_a_far_away_caption_and_a_mask_over_its_area():
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    seen_small = seen_large = False
    for seed in range(40):
        pixels, mask, caption = augment(img, "<new1> dog", np.random.default_rng(seed), 8)
        assert pixels.shape == (3, 64, 64) and mask.shape == (8, 8)
        if caption.startswith(("a far away", "very small")):
            seen_small = True
            assert 0 < float(mask.mean()) < 1
            # black outside the pasted image, the mask never covers black
            assert (
                float(pixels[:, (mask.repeat_interleave(8, 0).repeat_interleave(8, 1) > 0)].min())
                > 0.9
            )
        elif caption.startswith(("zoomed in", "close up")):
            seen_large = True
            assert float(mask.min()) == 1
        else:
            assert caption == "<new1> dog" and float(mask.min()) == 1
    assert seen_small and seen_large


def test_clips_are_static_and_captions_come_from_the_templates(tmp_path):
    paths = []
    for i in range(2):
        Image.new("RGB", (50, 30), (i * 100, 0, 0)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    data = SubjectImages(paths, 16, 24, 4, 8, "<new1> dog", CAPTION_TEMPLATES, augment=False)
    batch = data.sample(3, np.random.default_rng(0))
    assert batch.pixels.shape == (3, 3, 4, 16, 24)
    assert batch.masks.shape == (3, 1, 4, 2, 3)
    assert torch.equal(batch.pixels[:, :, 0], batch.pixels[:, :, 3])
    assert all(p in {t.format("<new1> dog") for t in CAPTION_TEMPLATES} for p in batch.prompts)


def test_subject_phrase_spans_the_tokens_and_the_class_word():
    assert subject_phrase("video of a <new1> dog", ["<new1>"]) == "<new1> dog"
    assert (
        subject_phrase("a <new1> dog with a <new2> cat.", ["<new1>", "<new2>"])
        == "<new1> dog with a <new2> cat"
    )
