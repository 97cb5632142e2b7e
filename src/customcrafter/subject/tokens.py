"""New subject tokens such as ``<new1>`` in the text encoder: added to the tokenizer and given
trainable embeddings while every existing embedding stays frozen (finding them in prompts is
:mod:`customcrafter.prompts`)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError


class SubjectTokenEmbedding(nn.Module):
    """A token embedding table extended by trainable rows for the new tokens.

    ``base`` (the original table) is never modified, so weight decay and optimiser updates
    touch only ``new_embeddings`` ``[n_tokens, d]``.
    """

    def __init__(self, base: nn.Embedding, token_ids: list[int], init: torch.Tensor):
        super().__init__()
        self.base = base
        self.token_ids = list(token_ids)
        self.new_embeddings = nn.Parameter(init.detach().clone().to(base.weight.dtype))
        lookup = torch.full((max(token_ids) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(token_ids)] = torch.arange(len(token_ids))
        self.register_buffer("row_of_id", lookup.to(base.weight.device), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # libraries read the table's dtype and device from here
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        top = self.row_of_id.numel() - 1
        rows = torch.where(input_ids <= top, self.row_of_id[input_ids.clamp(max=top)], -1)
        is_new = rows >= 0
        base_ids = torch.where(is_new | (input_ids >= self.base.num_embeddings), 0, input_ids)
        out = self.base(base_ids)
        new = self.new_embeddings[rows.clamp(min=0)].to(out.dtype)
        return torch.where(is_new.unsqueeze(-1), new, out)


def add_tokens(tokenizer, tokens: list[str]) -> list[int]:
    """Add ``tokens`` to ``tokenizer`` (a no-op for ones it has) and return their ids."""
    tokenizer.add_tokens([t for t in tokens if t not in tokenizer.get_vocab()])
    ids = tokenizer.convert_tokens_to_ids(tokens)
    for token in tokens:
        if len(tokenizer(token, add_special_tokens=False).input_ids) != 1:
            raise UserError(f"the tokenizer splits {token!r}; pick another token name")
    return list(ids)


def word_embedding(tokenizer, table: nn.Embedding, word: str) -> torch.Tensor:
    """Mean embedding ``[d]`` of the tokens that spell ``word``."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise UserError(f"initializer word {word!r} has no tokens")
    if max(ids) >= table.num_embeddings:
        raise UserError(f"initializer word {word!r} is itself a new token; use a real word")
    vector = table.weight[torch.tensor(ids, device=table.weight.device)].mean(0)
    scale = getattr(table, "embed_scale", None)  # Gemma's table scales what it looks up
    return vector if scale is None else vector * torch.as_tensor(scale).to(vector)
