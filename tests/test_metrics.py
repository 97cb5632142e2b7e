"""The evaluation metrics against direct computations of their definitions, with tiny random
CLIP and ViT models built in code (nothing is downloaded)."""

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_scorers import tiny_clip, tiny_vit

from customcrafter.errors import UserError
from customcrafter.evaluation import (
    ClipScorer,
    DinoScorer,
    evaluate_video,
    motion_metrics,
    preprocess,
)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return ClipScorer(*tiny_clip())


@pytest.fixture(scope="module")
def dino():
    torch.manual_seed(1)
    return DinoScorer(*tiny_vit())


def random_images(count, seed, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *size, 3), dtype=np.uint8)


def features(output):  # transformers 5 returns an output object, 4 a tensor
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# The direct computations: one image at a time, torch's cosine, no normalisation shortcuts.
@torch.no_grad()
def clip_image(scorer, image):
    pixels = scorer.processor(images=[Image.fromarray(image)], return_tensors="pt")
    return features(scorer.model.get_image_features(pixel_values=pixels["pixel_values"]))[0]


@torch.no_grad()
def clip_text(scorer, text):
    tokens = scorer.tokenizer([text], return_tensors="pt")
    return features(scorer.model.get_text_features(input_ids=tokens["input_ids"]))[0]


@torch.no_grad()
def dino_image(scorer, image):
    pixels = scorer.processor(images=[Image.fromarray(image)], return_tensors="pt")
    return scorer.model(pixel_values=pixels["pixel_values"]).last_hidden_state[0, 0]


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# --- CLIP-I / DINO-I ---------------------------------------------------------------------------
def test_frames_equal_to_the_reference_score_one(clip, dino):
    reference = random_images(1, seed=0)[0]
    video = np.stack([reference] * 4)
    assert clip.clip_i(video, [reference]) == pytest.approx(1.0, abs=1e-5)
    assert dino.dino_i(video, [Image.fromarray(reference)]) == pytest.approx(1.0, abs=1e-5)


def test_clip_i_and_dino_i_average_every_frame_reference_pair(clip, dino):
    video, references = random_images(3, seed=1), random_images(2, seed=2, size=(56, 36))
    for scorer, embed, score in (
        (clip, clip_image, clip.clip_i),
        (dino, dino_image, dino.dino_i),
    ):
        per_reference = [
            np.mean([cosine(embed(scorer, frame), embed(scorer, ref)) for frame in video])
            for ref in references
        ]
        assert per_reference[0] != pytest.approx(per_reference[1], abs=1e-4)  # not degenerate
        assert score(video, [references[0]]) == pytest.approx(per_reference[0], abs=1e-5)
        assert score(video, list(references)) == pytest.approx(np.mean(per_reference), abs=1e-5)


def test_a_list_of_pil_frames_scores_like_the_array(clip):
    video, reference = random_images(3, seed=3), random_images(1, seed=4)[0]
    frames = [Image.fromarray(frame) for frame in video]
    assert clip.clip_i(frames, [reference]) == pytest.approx(clip.clip_i(video, [reference]))


def test_embeddings_are_unit_length_and_batched(clip, dino):
    video = random_images(40, seed=5, size=(16, 16))  # more frames than one batch of 32
    for scorer in (clip, dino):
        embeddings = scorer.image_embeddings(video)
        assert embeddings.shape[0] == 40
        assert torch.allclose(embeddings.norm(dim=-1), torch.ones(40), atol=1e-5)
        single = scorer.image_embeddings(video[35])
        assert torch.allclose(single[0], embeddings[35], atol=1e-5)
    assert torch.allclose(clip.text_embeddings(["a", "a dog"]).norm(dim=-1), torch.ones(2))


# --- preprocessing -----------------------------------------------------------------------------
def normalized(image, processor):
    array = np.asarray(image, dtype=np.float32) / np.float32(255)
    mean = np.asarray(processor.image_mean, dtype=np.float32)
    return (array - mean) / np.asarray(processor.image_std, dtype=np.float32)


def test_clip_crops_the_center_at_the_authors_rounded_offset(clip):
    """A 65x48 image: the short side goes to 32 and the long one to int(32 * 65 / 48) = 43,
    a margin of 11. The authors' torchvision crop starts at round(5.5) = 6, transformers'
    processor at 11 // 2 = 5."""
    image = Image.fromarray(random_images(1, seed=13, size=(48, 65))[0])
    pixels = preprocess([image], clip.processor)[0].permute(1, 2, 0).numpy()
    resized = image.resize((43, 32), Image.BICUBIC)
    rounded = normalized(resized.crop((6, 0, 38, 32)), clip.processor)
    floored = normalized(resized.crop((5, 0, 37, 32)), clip.processor)
    assert np.allclose(pixels, rounded, atol=1e-6)
    assert not np.allclose(pixels, floored, atol=1e-2)


def test_dino_resizes_to_its_square_without_cropping(dino):
    image = Image.fromarray(random_images(1, seed=14, size=(48, 65))[0])
    pixels = preprocess([image], dino.processor)[0].permute(1, 2, 0).numpy()
    expected = normalized(image.resize((32, 32), Image.BILINEAR), dino.processor)
    assert np.allclose(pixels, expected, atol=1e-6)


def test_scores_depend_on_the_processor_settings_only(clip):
    """The numbers come from the settings, never from the processor's own (backend-dependent)
    implementation: a plain record of the same settings scores the same."""
    from types import SimpleNamespace

    names = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale")
    names += ("rescale_factor", "do_normalize", "image_mean", "image_std")
    settings = SimpleNamespace(**{name: getattr(clip.processor, name) for name in names})
    plain = ClipScorer(clip.model, settings, clip.tokenizer)
    video, reference = random_images(2, seed=15), random_images(1, seed=16, size=(48, 65))[0]
    assert plain.clip_i(video, [reference]) == clip.clip_i(video, [reference])


# --- CLIP-T ------------------------------------------------------------------------------------
def test_clip_t_is_the_mean_frame_prompt_cosine_without_the_subject_token(clip):
    video = random_images(3, seed=6)
    text = clip_text(clip, "a dog surfing")
    expected = np.mean([cosine(clip_image(clip, frame), text) for frame in video])
    assert clip.clip_t(video, "a <new1> dog surfing") == pytest.approx(expected, abs=1e-5)
    assert clip.clip_t(video, "a dog surfing") == pytest.approx(expected, abs=1e-5)
    # a subject named by an identifier word (--identifier sks) reads the same
    assert clip.clip_t(video, "a sks dog surfing", "sks") == pytest.approx(expected, abs=1e-5)
    assert clip.clip_t(video, "a cat") != pytest.approx(expected, abs=1e-4)


def test_a_prompt_of_only_tokens_is_refused(clip):
    with pytest.raises(UserError, match="no words"):
        clip.clip_t(random_images(2, seed=7), "<new1>")


# --- T.Cons ------------------------------------------------------------------------------------
def test_temporal_consistency_is_the_mean_consecutive_cosine(clip):
    video = random_images(4, seed=8)
    pairs = [
        cosine(clip_image(clip, a), clip_image(clip, b))
        for a, b in zip(video[:-1], video[1:], strict=True)
    ]
    assert clip.temporal_consistency(video) == pytest.approx(np.mean(pairs), abs=1e-5)
    static = np.stack([video[0]] * 5)
    assert clip.temporal_consistency(static) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(UserError, match="two frames"):
        clip.temporal_consistency(video[:1])


# --- motion ------------------------------------------------------------------------------------
def smooth_texture(height, width, seed=0):
    """Blurred noise stretched to 0..255: detail at a scale Farneback's 15 px window follows."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def square_video(positions, side=64, square=20):
    """A bright textured square on a dark background, its left edge at each x in positions."""
    patch = (smooth_texture(square, square, seed=1) // 2 + 128).astype(np.uint8)
    frames = np.full((len(positions), side, side, 3), 20, np.uint8)
    top = (side - square) // 2
    for frame, x in zip(frames, positions, strict=True):
        frame[top : top + square, x : x + square] = patch
    return frames


def test_a_static_video_has_no_motion():
    video = np.stack([smooth_texture(64, 64)] * 8)
    result = motion_metrics(video)
    # Farneback's iterative solve leaves a round-off residue even on identical frames (about
    # 0.003 px on average, 0.03 px in the top 5%): 0.1 px is 1/15 of the 1.5 px threshold
    assert result.mean_magnitude == pytest.approx(0.0, abs=0.01)
    assert result.pair_scores == pytest.approx([0.0] * 7, abs=0.1)
    assert result.dynamic is False
    assert result.threshold == pytest.approx(6.0 * 64 / 256)
    assert result.required_pairs == 2  # round(4 * 8 / 16)


def test_a_moving_square_is_dynamic_with_its_true_displacement():
    # 4 px per frame. The 20 x 20 square is 9.8% of the 64 x 64 frame, so the top 5% of flow
    # magnitudes lie on the rigidly moving square, where dense flow on a smooth texture is
    # sub-pixel accurate: 0.5 px (1/8 of the motion) allows for smoothing at the square's
    # edges and still keeps every pair far above the 1.5 px threshold.
    result = motion_metrics(square_video([4 + 4 * i for i in range(8)]))
    assert result.dynamic is True
    assert result.pair_scores == pytest.approx([4.0] * 7, abs=0.5)


def test_a_panning_video_has_mean_flow_magnitude_close_to_the_shift():
    # the camera pans 3 px per frame over a texture: every pixel moves 3 px, borders included
    # (the window slides over a larger texture, nothing wraps around). 10% tolerance covers
    # the pixels at the frame edges that enter or leave the view.
    texture = smooth_texture(120, 160)
    video = np.stack([texture[20:84, 10 + 3 * i : 74 + 3 * i] for i in range(8)])
    result = motion_metrics(video)
    assert result.mean_magnitude == pytest.approx(3.0, rel=0.1)
    assert result.dynamic is True


def test_a_video_is_dynamic_only_with_enough_moving_pairs():
    # 8 frames: round(4 * 8 / 16) = 2 pairs must score above the threshold
    one_jump = square_video([4, 4, 4, 14, 14, 14, 14, 14])
    two_jumps = square_video([4, 4, 4, 14, 14, 14, 24, 24])
    assert sum(s > 1.5 for s in motion_metrics(one_jump).pair_scores) == 1
    assert motion_metrics(one_jump).dynamic is False
    assert motion_metrics(two_jumps).dynamic is True


def test_fps_subsampling_and_threshold_scale():
    video = square_video([2 + 2 * i for i in range(16)])  # 2 px per frame at 16 fps
    result = motion_metrics(video, fps=16)  # every round(16 / 8) = 2nd frame: 8 frames
    assert len(result.pair_scores) == 7
    assert result.required_pairs == 2
    assert result.pair_scores == pytest.approx([4.0] * 7, abs=0.5)
    assert motion_metrics(video, base_threshold=4.0).threshold == pytest.approx(1.0)
    assert len(motion_metrics(video, fps=8).pair_scores) == 15


def test_unknown_flow_and_missing_raft_are_user_errors():
    video = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(UserError, match="unknown optical flow"):
        motion_metrics(video, flow="lucas-kanade")
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(UserError, match="torchvision"):
            motion_metrics(video, flow="raft")


# --- evaluate_video and loading ----------------------------------------------------------------
def test_evaluate_video_collects_every_metric(clip, dino):
    video, references = random_images(4, seed=9), list(random_images(2, seed=10))
    metrics = evaluate_video(video, "a <new1> dog", references, clip, dino)
    assert metrics.clip_t == pytest.approx(clip.clip_t(video, "a dog"))
    assert metrics.clip_i == pytest.approx(clip.clip_i(video, references))
    assert metrics.dino_i == pytest.approx(dino.dino_i(video, references))
    assert metrics.t_cons == pytest.approx(clip.temporal_consistency(video))
    motion = motion_metrics(video)
    assert metrics.dynamic == motion.dynamic
    assert metrics.flow_magnitude == pytest.approx(motion.mean_magnitude)
    bare = evaluate_video(video, "a dog", references, None, None, motion=False)
    assert all(value is None for value in vars(bare).values())


def test_scorers_load_from_a_local_folder(clip, dino, tmp_path):
    clip.model.save_pretrained(tmp_path / "clip")
    clip.processor.save_pretrained(tmp_path / "clip")
    clip.tokenizer.save_pretrained(tmp_path / "clip")
    dino.model.save_pretrained(tmp_path / "dino")
    dino.processor.save_pretrained(tmp_path / "dino")
    video, reference = random_images(2, seed=11), random_images(1, seed=12)[0]
    loaded_clip = ClipScorer.from_pretrained(tmp_path / "clip")
    assert loaded_clip.clip_t(video, "a dog") == pytest.approx(clip.clip_t(video, "a dog"))
    loaded_dino = DinoScorer.from_pretrained(tmp_path / "dino")
    assert loaded_dino.dino_i(video, [reference]) == pytest.approx(dino.dino_i(video, [reference]))


def test_a_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="CLIP model folder"):
        ClipScorer.from_pretrained(tmp_path / "no-such-clip")
    with pytest.raises(UserError, match="DINO model folder"):
        DinoScorer.from_pretrained(str(tmp_path / "no-such-dino"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not load the CLIP model"):
        ClipScorer.from_pretrained(tmp_path / "empty")
