"""The subject module's file: a safetensors file that holds ``<target>.lora_A.weight``
``[r, in]`` and ``<target>.lora_B.weight`` ``[out, r]`` for every target,
``token_embeddings`` ``[n_tokens, d]``, and JSON metadata (``customcrafter`` entry) naming
the base model, its architecture fingerprint, the targets, the rank, the tokens with their
initializer words and the training settings. A subject trained with an existing identifier
word (``--identifier sks``) has no tokens and no ``token_embeddings``: its metadata names
the word instead (format version 2).

:func:`read_subject` is the one checked reader every command goes through.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field, StrictInt
from safetensors import safe_open

from ..config import normalize
from ..errors import UserError
from ..prompts import strip_tokens

FORMAT_VERSION = 2
#: files without an identifier word are still written as version 1, which older releases read
TOKEN_FORMAT_VERSION = 1
SUBJECT_FILENAME = "subject.safetensors"

#: a LoRA value beyond this is no trained module: it would overflow half precision and
#: sample black videos
LARGEST_VALUE = 1e4
_FINITE = {"allow_inf_nan": False}


@dataclass
class SubjectMetadata:
    """What a subject module file says about itself; every field typed and bounded (the
    schema ``read_metadata`` checks a file's metadata against)."""

    base_model: Annotated[str, Field(min_length=1)]
    architecture_fingerprint: str
    weights_fingerprint: str
    target_preset: str
    targets: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    rank: Annotated[int, Field(ge=1, le=1024)]
    lora_alpha: Annotated[float, Field(gt=0, le=LARGEST_VALUE, **_FINITE)]
    tokens: list[Annotated[str, Field(min_length=1)]]
    initializer_words: dict[str, str]
    training: dict[str, Any] = field(default_factory=dict)
    format_version: Annotated[StrictInt, Field(ge=1, le=FORMAT_VERSION)] = TOKEN_FORMAT_VERSION
    #: the existing word that names the subject in prompts when no token was learnt
    identifier: Annotated[str, Field(min_length=1)] | None = None

    @property
    def words(self) -> list[str]:
        """What names the subject in prompts: its new tokens, or its identifier word."""
        return [self.identifier] if self.identifier else list(self.tokens)

    def base_prompt(self, prompt: str) -> str:
        """``prompt`` without the subject's tokens or identifier word: what the base model
        and the class-word steps of a schedule see."""
        return strip_tokens(prompt, [self.identifier] if self.identifier else ())


def resolve_subject_path(path: str | Path) -> Path:
    """Accept the training output folder or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / SUBJECT_FILENAME
    if not path.is_file():
        raise UserError(
            f"no subject module at {path}: give the training output folder or its {SUBJECT_FILENAME}"
        )
    return path


def read_metadata(path: str | Path) -> SubjectMetadata:
    """The metadata of a subject module file, checked: a damaged or foreign file is a
    ``UserError`` that names it."""
    path = resolve_subject_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("customcrafter")
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to replace
        raise UserError(f"{path} is not a readable safetensors file: {exc}") from exc
    if raw is None:
        raise UserError(f"{path} is a safetensors file but not a CustomCrafter subject module")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} has damaged metadata ({exc}); train the subject again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} has damaged metadata (not a mapping); train the subject again")
    version = data.get("format_version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer CustomCrafter; upgrade to load it")
    known = {f.name for f in fields(SubjectMetadata)}
    required = {f.name for f in fields(SubjectMetadata) if f.default is MISSING}
    required -= {f.name for f in fields(SubjectMetadata) if f.default_factory is not MISSING}
    unknown, missing = sorted(set(data) - known), sorted(required - set(data))
    if unknown or missing:
        raise UserError(
            f"{path} has damaged metadata (unknown fields {unknown}, missing {missing}); "
            "train the subject again"
        )
    metadata = SubjectMetadata(**data)
    try:
        normalize(metadata)
    except UserError as exc:
        raise UserError(f"{path} has damaged metadata ({exc}); train the subject again") from None
    if metadata.identifier is not None:
        if metadata.tokens or metadata.initializer_words:
            raise UserError(f"{path} names both an identifier and tokens; train the subject again")
    elif not metadata.tokens or set(metadata.tokens) != set(metadata.initializer_words):
        raise UserError(f"{path} names no subject tokens; train the subject again")
    return metadata


def read_subject(path: str | Path) -> tuple[SubjectMetadata, dict[str, torch.Tensor]]:
    """A subject module file's metadata and tensors, checked without a model: the one reader
    every command goes through (``generate``, ``export``, the probes, the app). Refused, with
    a ``UserError`` naming the file: damaged metadata, a missing or extra tensor, a LoRA
    matrix that is not ``[rank, in]`` / ``[out, rank]``, token embeddings that are missing
    or misshapen, and values that are NaN, infinite or beyond ``LARGEST_VALUE``."""
    path = resolve_subject_path(path)
    metadata = read_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to replace
        raise UserError(f"{path} is not a readable safetensors file: {exc}") from exc
    _check_embeddings(path, metadata, tensors.get("token_embeddings"))
    expected = {f"{t}.lora_{ab}.weight" for t in metadata.targets for ab in "AB"}
    lora = {k: v for k, v in tensors.items() if k != "token_embeddings"}
    if set(lora) != expected:
        missing, extra = sorted(expected - set(lora))[:3], sorted(set(lora) - expected)[:3]
        raise UserError(
            f"{path} does not hold the tensors its metadata names (missing {missing}, "
            f"unexpected {extra}); it is damaged: train the subject again"
        )
    for target in metadata.targets:
        a, b = lora[f"{target}.lora_A.weight"], lora[f"{target}.lora_B.weight"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != metadata.rank or b.shape[1] != metadata.rank:
            raise UserError(
                f"{path}: the LoRA of {target} is A {tuple(a.shape)}, B {tuple(b.shape)}, not "
                f"[{metadata.rank}, in] and [out, {metadata.rank}] for its rank "
                f"{metadata.rank}; it is damaged: train the subject again"
            )
    for name, value in tensors.items():
        if not value.is_floating_point():
            raise UserError(f"{path} holds {name} as {value.dtype}, not floats; it is damaged")
        if not value.isfinite().all():
            raise UserError(
                f"{path} holds NaN or infinite values (in {name}); it is damaged or its "
                "training diverged: train the subject again, with a lower --learning-rate"
            )
        if value.numel() and value.abs().max() > LARGEST_VALUE:
            raise UserError(
                f"{path} holds values beyond {LARGEST_VALUE:g} (in {name}), which no trained "
                "module has: it is damaged or its training diverged: train the subject again, "
                "with a lower --learning-rate"
            )
    return metadata, tensors


def _check_embeddings(path: Path, metadata: SubjectMetadata, embeddings) -> None:
    if metadata.identifier is not None:
        if embeddings is not None:
            raise UserError(f"{path} names an identifier but holds token embeddings; train again")
    elif embeddings is None or embeddings.ndim != 2 or len(embeddings) != len(metadata.tokens):
        raise UserError(
            f"{path} holds no embedding for each of its tokens {metadata.tokens}; "
            "train the subject again"
        )
