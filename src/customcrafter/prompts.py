"""New subject tokens in prompts (``<new1>``): finding them, dropping them for the base model,
the word each token's embedding starts from, and the phrase captions are built around."""

from __future__ import annotations

import re

from .errors import UserError

TOKEN_PATTERN = re.compile(r"<[^<>\s]+>")


def find_tokens(prompt: str) -> list[str]:
    """The ``<...>`` tokens in ``prompt``, in order of first appearance."""
    return list(dict.fromkeys(TOKEN_PATTERN.findall(prompt)))


def strip_tokens(prompt: str) -> str:
    """``"a <new1> dog"`` -> ``"a dog"``: what the base model alone can understand."""
    return " ".join(TOKEN_PATTERN.sub(" ", prompt).split())


def initializer_words(prompt: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Map each new token to the word its embedding starts from: by default the word right
    after it in the prompt (``"<new1> dog"`` -> ``dog``), as in Custom Diffusion."""
    overrides = overrides or {}
    words = {}
    for token in find_tokens(prompt):
        if token in overrides:
            words[token] = overrides[token]
            continue
        match = re.search(re.escape(token) + r"\s+([^\s<>]+)", prompt)
        if match is None:
            raise UserError(
                f"cannot tell which word {token} starts from: put the class word after it "
                f"('video of a {token} dog') or pass --initializer-word {token}=dog"
            )
        words[token] = match.group(1).strip(".,;:!?")
    return words


def subject_phrase(instance_prompt: str, tokens: list[str]) -> str:
    """The part of the prompt from the first new token through the word after the last one:
    ``"video of a <new1> dog"`` -> ``"<new1> dog"``; training captions are built around it."""
    start = min(instance_prompt.index(t) for t in tokens)
    last = max(tokens, key=lambda t: instance_prompt.rindex(t))
    end = instance_prompt.rindex(last) + len(last)
    rest = instance_prompt[end:].split()
    return (instance_prompt[start:end] + (" " + rest[0] if rest else "")).strip(" .,")
