"""The Spatial Subject Learning Module: peft LoRA on the spatial attention layers of a frozen
base model plus the embeddings of the new subject tokens, saved as one safetensors file
(its format and checked reader: ``file.py``)."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError
from ..io.files import atomic_path
from ..models.base import BaseVideoModel
from .file import (
    FORMAT_VERSION,
    TOKEN_FORMAT_VERSION,
    SubjectMetadata,
    read_subject,
    resolve_subject_path,
)
from .targets import resolve_targets
from .tokens import SubjectTokenEmbedding, add_tokens, word_embedding

ADAPTER = "subject"


class SpatialSubjectModule:
    """LoRA (rank ``r``, peft) on the spatial attention projections of ``model.unet`` plus
    trainable embeddings for the subject tokens (none with an identifier word:
    ``embedding`` is then ``None``).

    Create one for training with :meth:`create`, or load a trained one with :meth:`load`.
    """

    def __init__(
        self,
        model: BaseVideoModel,
        metadata: SubjectMetadata,
        embedding: SubjectTokenEmbedding | None,
    ):
        self.model = model
        self.metadata = metadata
        self.embedding = embedding
        modules = named_modules(model)
        self.layers: dict[str, nn.Module] = {name: modules[name] for name in metadata.targets}
        self.fold_copies = None  # folding.FoldedCopies, made by the first folded video
        for param in self.parameters():
            param.requires_grad_(True)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        model: BaseVideoModel,
        initializer_words: dict[str, str],
        preset: str = "spatial-qkv",
        override: list[str] | None = None,
        rank: int = 4,
        seed: int = 0,
        identifier: str | None = None,
        experts: str | None = None,
    ) -> SpatialSubjectModule:
        """Inject a fresh module: LoRA A ~ N(0, 1/rank) drawn from ``seed``, B = 0 (so it
        starts as a no-op), and each token's embedding initialised from its initializer
        word. With ``identifier`` (an existing word, ``initializer_words`` empty) no token
        is added and no embedding trained. ``experts`` (two-expert models): ``"high"``,
        ``"low"`` or ``"both"`` (the default)."""
        if identifier is not None and initializer_words:
            raise UserError("a subject has new tokens or an identifier word, not both")
        if identifier is None and not initializer_words:
            raise UserError("a subject needs a new token or an identifier word")
        targets = for_experts(model, resolve_targets(model, preset, override), experts)
        metadata = SubjectMetadata(
            base_model=model.name,
            architecture_fingerprint=model.architecture_fingerprint(),
            weights_fingerprint=model.weights_fingerprint(),
            target_preset="custom" if override else preset,
            targets=targets,
            rank=rank,
            lora_alpha=float(rank),
            tokens=list(initializer_words),
            initializer_words=dict(initializer_words),
            identifier=identifier,
            format_version=FORMAT_VERSION if identifier else TOKEN_FORMAT_VERSION,
        )
        _inject_lora(model, metadata)
        embedding = None
        if metadata.tokens:
            table = _unwrapped_embedding(model)
            ids = add_tokens(model.tokenizer, metadata.tokens)
            init = torch.stack(
                [word_embedding(model.tokenizer, table, w) for w in initializer_words.values()]
            )
            embedding = SubjectTokenEmbedding(table, ids, init.float())
            model.set_token_embedding(embedding)
        module = cls(model, metadata, embedding)
        module._draw_lora_a(seed)
        return module

    @torch.no_grad()
    def _draw_lora_a(self, seed: int) -> None:
        """peft draws A from the global random state, which differs from process to process;
        drawing it again from ``seed`` makes a run with the same settings give the same module."""
        generator = torch.Generator().manual_seed(seed)
        for layer in self.layers.values():
            a = layer.lora_A[ADAPTER].weight
            noise = torch.randn(a.shape, generator=generator) / layer.r[ADAPTER]
            a.copy_(noise.to(device=a.device, dtype=a.dtype))

    @classmethod
    def load(
        cls, path: str | Path, model: BaseVideoModel, strict: bool = True
    ) -> SpatialSubjectModule:
        """Load a subject module file onto ``model``.

        Raises ``UserError`` naming the mismatch when the file was trained on another base
        model (architecture, or weights with ``strict``).
        """
        path = resolve_subject_path(path)
        metadata, tensors = read_subject(path)
        check_compatible(metadata, model, strict=strict)
        _check_fits(path, metadata, tensors, model)
        _inject_lora(model, metadata)
        embedding = None
        if metadata.tokens:
            table = _unwrapped_embedding(model)
            ids = add_tokens(model.tokenizer, metadata.tokens)
            embedding = SubjectTokenEmbedding(table, ids, tensors.pop("token_embeddings").float())
            model.set_token_embedding(embedding)
        module = cls(model, metadata, embedding)
        module.load_lora_state_dict(tensors)
        return module

    # --- parameters ------------------------------------------------------------------------
    def lora_parameters(self) -> list[nn.Parameter]:
        params = []
        for layer in self.layers.values():
            params += [layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight]
        return params

    def parameters(self) -> list[nn.Parameter]:
        """Everything training updates: the LoRA matrices and the new token embeddings."""
        if self.embedding is None:
            return self.lora_parameters()
        return [*self.lora_parameters(), self.embedding.new_embeddings]

    @property
    def trains_text_encoder(self) -> bool:
        """Whether training needs the text encoder's gradient (a learnt token's embedding)."""
        return self.embedding is not None

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, layer in self.layers.items():
            out[f"{name}.lora_A.weight"] = layer.lora_A[ADAPTER].weight.detach()
            out[f"{name}.lora_B.weight"] = layer.lora_B[ADAPTER].weight.detach()
        if self.embedding is not None:
            out["token_embeddings"] = self.embedding.new_embeddings.detach()
        return out

    def load_lora_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        if "token_embeddings" in tensors:
            if self.embedding is None:
                raise UserError("the tensors hold token embeddings; this subject has none")
            with torch.no_grad():
                self.embedding.new_embeddings.copy_(tensors.pop("token_embeddings"))
        expected = {f"{n}.lora_{ab}.weight" for n in self.layers for ab in "AB"}
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors))[:3]
            extra = sorted(set(tensors) - expected)[:3]
            raise UserError(
                f"subject module tensors do not match its targets (missing {missing}, unexpected {extra})"
            )
        with torch.no_grad():
            for name, layer in self.layers.items():
                for ab, holder in (("A", layer.lora_A[ADAPTER]), ("B", layer.lora_B[ADAPTER])):
                    value = tensors[f"{name}.lora_{ab}.weight"]
                    if value.shape != holder.weight.shape:
                        raise UserError(
                            f"{name}.lora_{ab}: shape {tuple(value.shape)} in the file, {tuple(holder.weight.shape)} in the model"
                        )
                    holder.weight.copy_(value)

    def save(self, path: str | Path, training: dict[str, Any] | None = None) -> Path:
        """Write the module (tensors in float32 on the CPU) atomically to ``path``."""
        path = Path(path)
        if training is not None:
            self.metadata.training = training
        tensors = {k: v.float().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            metadata = {"customcrafter": json.dumps(asdict(self.metadata))}
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    # --- the weight the module contributes ---------------------------------------------------
    def set_scale(self, weight: float) -> None:
        """Run the LoRA branches unmerged at ``weight`` (training and reference sampling)."""
        for layer in self.layers.values():
            layer.set_scale(ADAPTER, weight)

    @contextmanager
    def folded_as_run(self):
        """Sample with the LoRA folded into each layer's weight as it runs (float8 or
        offloaded weights: see :class:`~.folding.FoldedAsRun`); yields it (``set(w)``)."""
        from .folding import FoldedAsRun

        folded = FoldedAsRun(self)
        try:
            yield folded
        finally:
            folded.restore()

    def release_folded(self) -> None:
        """Drop the folded copies kept for the next video; their memory goes back."""
        self.fold_copies = None

    @contextmanager
    def folded(self):
        """Sample with the LoRA folded into the base weights; yields a
        :class:`~.folding.FoldedWeights` whose ``set(w)`` makes each layer compute
        ``W0 + w * B A`` at plain-Linear cost. The exact base weights are restored on exit,
        whatever happens inside."""
        from .folding import FoldedWeights  # it builds on this module

        folded = FoldedWeights(self)
        try:
            yield folded
        finally:
            folded.restore()


def check_compatible(metadata: SubjectMetadata, model: BaseVideoModel, strict: bool = True) -> None:
    """Raise ``UserError`` naming how ``model`` differs from the base the module was trained on."""
    problems = []
    if metadata.architecture_fingerprint != model.architecture_fingerprint():
        modules = named_modules(model)
        missing = [t for t in metadata.targets if t not in modules]
        detail = (
            f"; {len(missing)} of its {len(metadata.targets)} target layers do not exist there (e.g. {missing[0]})"
            if missing
            else ""
        )
        problems.append(
            f"its architecture differs (fingerprint {metadata.architecture_fingerprint} in the file, "
            f"{model.architecture_fingerprint()} for the loaded model{detail})"
        )
    elif strict and metadata.weights_fingerprint != model.weights_fingerprint():
        problems.append("it has the same architecture but different weights")
    if problems:
        raise UserError(
            f"this subject module was trained on base model {metadata.base_model!r}, "
            f"but the loaded base model {model.name!r} does not match: {'; '.join(problems)}. "
            f"Pass --base {metadata.base_model} (or the same model's folder)."
        )


def _check_fits(path: Path, metadata: SubjectMetadata, tensors: dict, model: BaseVideoModel):
    """Refuse a file whose layers or token width the model does not have."""
    modules = named_modules(model)
    missing = [t for t in metadata.targets if t not in modules]
    if missing:
        raise UserError(
            f"{path} adapts layers that {model.name!r} does not have (e.g. {missing[0]}); "
            f"load it onto the base it was trained on, {metadata.base_model!r}"
        )
    embeddings = tensors.get("token_embeddings")
    width = _unwrapped_embedding(model).embedding_dim
    if embeddings is not None and embeddings.shape[1] != width:
        raise UserError(
            f"{path}'s token embeddings are {embeddings.shape[1]} wide, the text encoder's "
            f"{width}; it is damaged or from another base: train the subject again"
        )


def _inject_lora(model: BaseVideoModel, metadata: SubjectMetadata) -> None:
    config = LoraConfig(
        r=metadata.rank,
        lora_alpha=metadata.lora_alpha,
        target_modules=metadata.targets,
        init_lora_weights="gaussian",  # A ~ N(0, 1/r), B = 0, as in the authors' code
        lora_dropout=0.0,
    )
    roots = model.experts()
    if any(hasattr(m, "lora_A") for root in roots.values() for m in root.modules()):
        raise UserError("this base model already carries a subject module; load a fresh base model")
    by_root: dict[int, tuple[nn.Module, list[str]]] = {}
    for target in metadata.targets:
        root, relative = owner(model, target)
        by_root.setdefault(id(root), (root, []))[1].append(relative)
    for root, targets in by_root.values():
        config = dataclasses.replace(config, target_modules=targets)
        inject_adapter_in_model(config, root, adapter_name=ADAPTER)
    for root in roots.values():
        root.requires_grad_(False)
    for module in named_modules(model).values():  # peft makes LoRA in its base's dtype
        for name in ("lora_A", "lora_B"):
            for matrix in getattr(module, name, {}).values():
                if matrix.weight.dtype == model.storage_dtype:
                    matrix.to(torch.float32)


def named_modules(model: BaseVideoModel) -> dict[str, nn.Module]:
    """Every module a subject may adapt, by its name in subject files (a two-expert model's
    second expert's names carry its prefix, ``transformer_2.``)."""
    return {
        prefix + name: module
        for prefix, root in model.experts().items()
        for name, module in root.named_modules()
        if name
    }


def owner(model: BaseVideoModel, target: str) -> tuple[nn.Module, str]:
    """The denoiser holding the layer ``target`` (a subject file's name) and its name there."""
    roots = model.experts()
    prefix = next(p for p in sorted(roots, key=len, reverse=True) if target.startswith(p))
    return roots[prefix], target[len(prefix) :]


def for_experts(model: BaseVideoModel, targets: list[str], experts: str | None) -> list[str]:
    """``targets`` (layer names in ``model.unet``) in the experts ``experts`` names: on a
    two-expert model ``high`` is the first (``unet``), ``low`` the second, ``both`` (the
    default) each."""
    roots = model.experts()
    if len(roots) < 2:
        if experts is not None:
            raise UserError(
                f"--experts {experts} chooses between the two experts of Wan 2.2 A14B; "
                f"{model.name!r} has one denoiser: leave --experts out"
            )
        return targets
    low = next(p for p in roots if p)
    chosen = {"high": [""], "low": [low], "both": ["", low], None: ["", low]}[experts]
    return [prefix + t for prefix in chosen for t in targets]


def _unwrapped_embedding(model: BaseVideoModel) -> nn.Embedding:
    table = model.token_embedding()
    return table.base if isinstance(table, SubjectTokenEmbedding) else table
