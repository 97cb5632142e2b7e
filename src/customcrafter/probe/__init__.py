"""Probes of a base model and a subject module: when the denoiser decides each attribute of a
video (:func:`commitment`), in which steps the subject module does its harm and its good
(:func:`bands`), and the identity-motion frontier of sampling methods
(:func:`frontier_videos`, :func:`summarise`)."""

from ..models.plugins import PromptPair
from .bands import BandResult, bands
from .commitment import Commitment, commitment, generic_pairs
from .frontier import Method, choose, frontier_videos, summarise

__all__ = [
    "BandResult",
    "Commitment",
    "Method",
    "PromptPair",
    "bands",
    "choose",
    "commitment",
    "frontier_videos",
    "generic_pairs",
    "summarise",
]
