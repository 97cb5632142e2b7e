"""Probes of a base model and a subject module: when the denoiser decides each attribute of a
video (:func:`commitment`), and in which steps the subject module does its harm and its good
(:func:`bands`)."""

from .bands import BandResult, bands
from .commitment import Commitment, PromptPair, commitment, generic_pairs, shapes_pairs

__all__ = [
    "BandResult",
    "Commitment",
    "PromptPair",
    "bands",
    "commitment",
    "generic_pairs",
    "shapes_pairs",
]
