"""The shapes model as a named base (``--base shapes``), and what its world offers the tools
(a ``models.plugins.Lab``): its detectors as the commitment probe's scorer and as the
probes' and the app's reading of a clip, its bundled subjects, its subject recipe and the
prompt pairs of its caption grammar. ``pyproject.toml`` declares ``SHAPES`` in the
``customcrafter.bases`` entry-point group."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..models.plugins import BundledSubject, PromptPair
from ..models.videocrafter2 import VideoCrafter2Model
from . import customize, detect, score
from .world import SUBJECTS, SUBJECTS_DIR, caption

#: the shapes model this project trains, shipped as a converted folder in the package
SHAPES_WEIGHTS = Path(__file__).resolve().parent / "weights"
MOTION = "motion"


class DetectorScorer:
    """The shapes world: a clip follows prompt A when the detectors read the attribute A
    asks for (the motion direction, the object's color, the background)."""

    name = "shapes-world detectors"

    def verdict(self, clip, attribute, first, then, pure_first=None, pure_then=None):
        read = getattr(detect.read_clip(clip), attribute)
        if read == getattr(score.wanted(first), attribute):
            return "first"
        if read == getattr(score.wanted(then), attribute):
            return "then"
        return None


class ShapesLab:
    """What the shapes world offers the probes, the benchmark runner and the app."""

    name = "shapes"
    scorer = DetectorScorer()
    subjects = {
        name: BundledSubject(name, subject.class_word, SUBJECTS_DIR / name)
        for name, subject in SUBJECTS.items()
    }

    def recipe(self, subject, output_dir, steps=300, lora_targets="spatial-qkv"):
        return customize.subject_train_config(subject, output_dir, steps, lora_targets)

    def prompt_pairs(self) -> list[PromptPair]:
        """Pairs in the world's caption grammar: opposite directions (motion), and as the
        contrast the object's color and the background, each over varied other words."""
        pairs = []
        motions = [("left", "right"), ("right", "left"), ("up", "down"), ("down", "up")]
        others = [("red", "square", "gray"), ("blue", "circle", "black"),
                  ("green", "triangle", "white"), ("yellow", "star", "purple")]  # fmt: skip
        for (a, b), (color, shape, background) in zip(motions, others, strict=True):
            pairs.append(
                PromptPair(
                    MOTION,
                    caption(color, shape, f"moving {a}", background),
                    caption(color, shape, f"moving {b}", background),
                )
            )
        colors = [("red", "blue"), ("blue", "red"), ("green", "yellow"), ("yellow", "green")]
        for (a, b), (_, shape, background), (m, _) in zip(colors, others, motions, strict=True):
            motion = f"moving {m}"
            pairs.append(
                PromptPair(
                    "color",
                    caption(a, shape, motion, background),
                    caption(b, shape, motion, background),
                )
            )
        backgrounds = [
            ("black", "white"),
            ("white", "black"),
            ("gray", "purple"),
            ("purple", "gray"),
        ]
        for (a, b), (color, shape, _), (m, _) in zip(backgrounds, others, motions, strict=True):
            motion = f"moving {m}"
            pairs.append(
                PromptPair(
                    "background", caption(color, shape, motion, a), caption(color, shape, motion, b)
                )
            )
        return pairs

    def moving_prompts(self, word: str, token: str) -> list[str]:
        return customize.moving_prompts(word, token)

    def score_clip(self, clip, prompt: str, references: Sequence | None = None):
        return score.score_clip(clip, prompt, references)

    def similarity(self, clip, references: Sequence) -> float:
        return detect.subject_similarity(clip, references)


class ShapesBase:
    """``--base shapes``: the 2 M-parameter model of the paper's architecture that this
    project trains on the shapes world and ships."""

    help = "the small model trained on the shapes world that ships with CustomCrafter"
    lab = ShapesLab()

    def load(self) -> VideoCrafter2Model:
        return VideoCrafter2Model.from_converted(SHAPES_WEIGHTS)


SHAPES = ShapesBase()
