"""How this project customizes the shapes model with a bundled subject (shared by the demo
and the claims benchmark, so both measure the same recipe)."""

from __future__ import annotations

from pathlib import Path

from ..config import TrainConfig
from .world import SUBJECTS, SUBJECTS_DIR, caption

#: the new token every bundled subject is learnt as
TOKEN = "<new1>"


def subject_prompt(name: str, motion: str, background: str) -> str:
    """The world's caption with the subject in the object's place:
    ``"a <new1> star moving right on a gray background"``."""
    return caption(TOKEN, SUBJECTS[name].class_word, motion, background)


#: (direction, background) of the moving prompts the probes ask of a subject
MOVING_PARTS = (("left", "gray"), ("right", "purple"), ("up", "purple"), ("down", "white"))


def moving_prompts(word: str, token: str = TOKEN) -> list[str]:
    """The subject moving each way, on reference and new backgrounds:
    ``"a <new1> star moving left on a gray background"``, ..."""
    return [caption(token, word, f"moving {m}", background) for m, background in MOVING_PARTS]


def subject_train_config(
    name: str,
    output_dir: str | Path,
    steps: int = 300,
    lora_targets: str = "spatial-qkv",
    lora_target_override: list[str] | None = None,
) -> TrainConfig:
    """Subject-module training on the shapes model for the bundled subject ``name``.

    The paper's recipe, scaled to a 2 M-parameter model and a CPU budget: 8-frame static
    clips (the model's length), prior preservation with 24 class images, no rescale
    augmentation (at 32x32 it would shrink the object to a few pixels), and a learning rate
    of 1e-3 for a few hundred steps instead of 3e-5 for 10 000.
    """
    word = SUBJECTS[name].class_word
    return TrainConfig(
        base="shapes",
        instance_data_dir=str(SUBJECTS_DIR / name),
        instance_prompt=f"a {TOKEN} {word}",
        class_prompt=f"a {word}",
        output_dir=str(output_dir),
        num_class_images=24,
        class_sampling_steps=25,
        lora_targets=lora_targets,
        lora_target_override=lora_target_override,
        train_frames=8,
        augment=False,
        learning_rate=1e-3,
        train_batch_size=2,
        max_train_steps=steps,
        checkpointing_steps=max(1, steps // 2),
        checkpoints_total_limit=1,
    )
