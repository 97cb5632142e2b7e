"""The Spatial Subject Learning Module: which layers, LoRA via peft, the new tokens' embeddings,
its file."""

from .file import (
    SUBJECT_FILENAME,
    SubjectMetadata,
    read_metadata,
    read_subject,
    resolve_subject_path,
)
from .module import SpatialSubjectModule, check_compatible
from .targets import TARGET_PRESETS, resolve_targets

__all__ = [
    "SUBJECT_FILENAME",
    "TARGET_PRESETS",
    "SpatialSubjectModule",
    "SubjectMetadata",
    "check_compatible",
    "read_metadata",
    "read_subject",
    "resolve_subject_path",
    "resolve_targets",
]
