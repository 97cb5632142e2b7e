"""The Spatial Subject Learning Module: which layers, LoRA via peft, the new tokens' embeddings,
its file."""

from .module import (
    SUBJECT_FILENAME,
    SpatialSubjectModule,
    SubjectMetadata,
    check_compatible,
    read_metadata,
    resolve_subject_path,
)
from .targets import TARGET_PRESETS, resolve_targets

__all__ = [
    "SUBJECT_FILENAME",
    "TARGET_PRESETS",
    "SpatialSubjectModule",
    "SubjectMetadata",
    "check_compatible",
    "read_metadata",
    "resolve_subject_path",
    "resolve_targets",
]
