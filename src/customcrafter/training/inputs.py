"""What a training run learns from: its settings and photos checked before anything loads,
the class data (generated with the base model and cached, unless given), the instance and
class clips, and, with ``--cache-inputs``, their encodings made once before the loop."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import UserError
from ..io.images import list_images
from ..io.video import list_videos
from ..prompts import check_identifier, find_tokens, initializer_words, subject_phrase
from .cache import EncodedClips
from .class_images import (
    class_image_dir,
    class_video_dir,
    ensure_class_images,
    ensure_class_videos,
)
from .data import CAPTION_TEMPLATES, ClassClips, SubjectImages

logger = logging.getLogger(__name__)


def check_inputs(config: TrainConfig):
    """The settings, the subject's new tokens (or identifier word) and its photos (and the
    class images given), checked before anything is loaded: ``(tokens or [identifier],
    initializer words, instance paths, class paths or None)``."""
    config.validate()
    if not config.output_dir:
        raise UserError("give an output folder (--output-dir)")
    if config.identifier is not None:
        check_identifier(config.instance_prompt, config.identifier)
        tokens, init_words = [config.identifier], {}
    else:
        tokens = find_tokens(config.instance_prompt)
        if not tokens:
            raise UserError(
                f"the instance prompt {config.instance_prompt!r} has no new token: write the "
                "subject as a token in angle brackets followed by its class, e.g. 'video of a "
                "<new1> dog' (or name it by an existing word with --identifier sks)"
            )
        init_words = initializer_words(config.instance_prompt, config.initializer_words)
    instance_paths = list_images(config.instance_data_dir, "instance image")
    class_paths = None
    if config.prior_loss_weight > 0 and config.class_data_dir:
        if config.class_videos:
            class_paths = list_videos(config.class_data_dir, "class video")
        else:
            class_paths = list_images(config.class_data_dir, "class image")
    return tokens, init_words, instance_paths, class_paths


def photos_fingerprint(paths: list[Path]) -> str:
    """A digest of the photos' names and bytes: a resumed run checks it learns from the same
    photos."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def generate_class_data(config, model, height, width, progress) -> list[Path]:
    """The cached class images (or, with ``class_videos``, clips) of the base model."""
    if config.class_videos:
        folder = class_video_dir(model, config.class_prompt, config.train_frames, height, width)
        return ensure_class_videos(
            model,
            config.class_prompt,
            config.num_class_images,
            folder,
            config.train_frames,
            height,
            width,
            num_inference_steps=config.class_sampling_steps,
            progress=progress,
        )
    return ensure_class_images(
        model,
        config.class_prompt,
        config.num_class_images,
        class_image_dir(model, config.class_prompt, height, width),
        height,
        width,
        num_inference_steps=config.class_sampling_steps,
        progress=progress,
    )


def encode_once(config, model, data, embed_text: bool, progress: bool):
    """``data`` encoded before the loop (``training.cache``), from the run's seed: a resumed
    run encodes the same views."""
    instances, classes = data
    rng = np.random.default_rng([config.seed, 0xCACE])
    views = config.cache_views if config.augment else 1
    encoded = EncodedClips(
        model, instances, views, rng, embed_text, progress, desc="encoding photos"
    )
    if classes is not None:
        class_views = config.cache_views if config.class_videos else 1
        classes = EncodedClips(
            model, classes, class_views, rng, embed_text, progress, desc="encoding class data"
        )
    size = (encoded.nbytes() + (classes.nbytes() if classes is not None else 0)) / 2**20
    logger.info("training inputs encoded once: %.0f MiB in CPU memory", size)
    return encoded, classes


def datasets(config, tokens, instance_paths, class_paths, height, width, factor):
    """``(instance clips, class clips or None)``: every photo as a static clip."""
    phrase = subject_phrase(config.instance_prompt, tokens)
    instances = SubjectImages(
        instance_paths,
        height,
        width,
        config.train_frames,
        factor,
        phrase,
        CAPTION_TEMPLATES,
        augment=config.augment,
    )
    if config.prior_loss_weight <= 0:
        return instances, None
    if config.class_videos:
        classes = ClassClips(
            class_paths, height, width, config.train_frames, factor, config.class_prompt
        )
    else:
        classes = SubjectImages(
            class_paths, height, width, config.train_frames, factor, config.class_prompt
        )
    return instances, classes
