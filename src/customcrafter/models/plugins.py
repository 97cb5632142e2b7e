"""Named base models that packages add, and what a lab model offers beyond the interface.

A package adds a base model that ``--base NAME`` loads through the entry-point group
``customcrafter.bases``; the object it names is a :class:`NamedBase`. CustomCrafter's own
shapes model comes this way (its ``pyproject.toml``)::

    [project.entry-points."customcrafter.bases"]
    shapes = "customcrafter.shapes.lab:SHAPES"

A named base may carry a :class:`Lab`: what a model trained on a world with known rules
offers the tools beyond generation (a scorer that reads its clips, bundled subjects, a
subject-training recipe, the prompt pairs of the commitment probe). The probes, the
benchmark runner and the app ask a model's ``lab`` for these; a model without one is read
with the label-free measures (optical flow), as any other base.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from ..errors import UserError

#: the entry-point group of named base models
GROUP = "customcrafter.bases"


@dataclass(frozen=True)
class PromptPair:
    """Two prompts that differ in ``attribute`` only: ``first`` for the first steps, then
    ``then`` (the commitment probe)."""

    attribute: str
    first: str
    then: str


@dataclass(frozen=True)
class BundledSubject:
    """A subject that ships with a lab: its reference images and its class word."""

    name: str
    class_word: str
    folder: Path


class Scorer(Protocol):
    """Reads which of two prompts a clip follows (the commitment probe)."""

    name: str

    def verdict(self, clip, attribute: str, first: str, then: str, pure_first, pure_then):
        """``"first"``, ``"then"`` or ``None`` (neither) for the uint8 clip ``[f, h, w, 3]``;
        ``pure_first`` / ``pure_then``: the clips of the same noise under one prompt."""


class Lab(Protocol):
    """What a lab model offers the probes, the benchmark runner and the app."""

    #: how the tools name it (``"shapes"``: "the shapes recipe")
    name: str
    #: reads its clips for the commitment probe
    scorer: Scorer
    #: the subjects it ships, by name
    subjects: Mapping[str, BundledSubject]

    def recipe(
        self, subject: str, output_dir: str | Path, steps: int, lora_targets: str = ...
    ) -> Any:
        """The ``TrainConfig`` that learns the bundled ``subject`` on this model."""

    def prompt_pairs(self) -> list[PromptPair]:
        """The commitment probe's pairs in its world's words."""

    def moving_prompts(self, word: str, token: str) -> list[str]:
        """Prompts of the subject ``token word`` moving in several directions (the band
        probe's default)."""

    def score_clip(self, clip, prompt: str, references: Sequence | None = None) -> Any:
        """Its detectors' reading of a uint8 clip against its prompt: ``motion_ok``,
        ``displacement``, ``as_row()`` and ``metrics()``."""

    def similarity(self, clip, references: Sequence) -> float:
        """Subject similarity of a clip to reference images."""


class NamedBase(Protocol):
    """A base model ``--base NAME`` loads."""

    #: one line for the list of base models in errors and help
    help: str
    #: what it offers beyond the interface, if it is a lab model
    lab: Lab | None

    def load(self) -> Any:
        """The model (a ``BaseVideoModel``), frozen."""


@functools.cache
def named_base(name: str) -> NamedBase | None:
    """The named base model ``name`` an installed package declares, or ``None`` (only its
    own package is imported)."""
    found = entry_points(group=GROUP, name=name)
    return next(iter(found)).load() if found else None


def named_bases() -> dict[str, NamedBase]:
    """Every named base model the installed packages declare, by name."""
    return {entry.name: named_base(entry.name) for entry in entry_points(group=GROUP)}


def lab_of(base: str | None) -> Lab | None:
    """The lab of the named base ``base`` (without loading its weights); ``None`` for any
    other base."""
    named = named_base(base) if base else None
    return None if named is None else named.lab


def bundled_subjects() -> dict[str, BundledSubject]:
    """Every installed lab's bundled subjects, by name."""
    return {
        name: subject
        for base in named_bases().values()
        if base.lab is not None
        for name, subject in base.lab.subjects.items()
    }


def require_lab(lab: Lab | None, what: str) -> Lab:
    """``lab``, or a ``UserError`` saying that ``what`` needs a lab model."""
    if lab is None:
        labs = ", ".join(n for n, b in named_bases().items() if b.lab is not None) or "none"
        raise UserError(f"{what} needs a lab model (installed: {labs})")
    return lab
