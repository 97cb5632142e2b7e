"""New subject tokens in prompts (``<new1>``), or an existing identifier word in their place
(``sks``, ``--identifier``): finding them, dropping them for the base model, the word each
token's embedding starts from, and the phrase captions are built around."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import UserError

TOKEN_PATTERN = re.compile(r"<[^<>\s]+>")
#: what ``--identifier`` takes: one plain word (letters, digits, ``_`` or ``-``)
IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def find_tokens(prompt: str) -> list[str]:
    """The ``<...>`` tokens in ``prompt``, in order of first appearance."""
    return list(dict.fromkeys(TOKEN_PATTERN.findall(prompt)))


def _word(word: str) -> re.Pattern:
    """``word`` as a whole word (not inside another one)."""
    return re.compile(rf"(?<![\w<>-]){re.escape(word)}(?![\w<>-])")


def has_word(prompt: str, word: str) -> bool:
    return _word(word).search(prompt) is not None


def strip_tokens(prompt: str, words: Iterable[str] = ()) -> str:
    """``"a <new1> dog"`` -> ``"a dog"``: what the base model alone can understand. ``words``:
    identifier words to drop as well (``strip_tokens("a sks dog", ["sks"])`` -> ``"a dog"``)."""
    text = TOKEN_PATTERN.sub(" ", prompt)
    for word in words:
        text = _word(word).sub(" ", text)
    return " ".join(text.split())


def check_identifier(prompt: str, word: str) -> None:
    """Refuse an ``--identifier`` that is not one plain word or that ``prompt`` (the instance
    prompt) does not use before a class word."""
    if not IDENTIFIER_PATTERN.fullmatch(word):
        raise UserError(
            f"--identifier {word!r} must be one plain word (letters, digits, _ or -), e.g. sks; "
            "for a new token in angle brackets leave --identifier out"
        )
    if find_tokens(prompt):
        raise UserError(
            f"the instance prompt {prompt!r} has a new token ({', '.join(find_tokens(prompt))}) "
            f"and --identifier {word}: use one or the other, e.g. 'video of a {word} dog'"
        )
    match = re.search(_word(word).pattern + r"\s+([^\s<>]+)", prompt)
    if match is None:
        raise UserError(
            f"the instance prompt {prompt!r} does not use the identifier {word!r} before the "
            f"class word: write it as 'video of a {word} dog'"
        )


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
    """The part of the prompt from the first new token (or identifier word) through the word
    after the last one: ``"video of a <new1> dog"`` -> ``"<new1> dog"``; training captions are
    built around it."""
    spans = [m.span() for t in tokens for m in _word(t).finditer(instance_prompt)]
    start, end = min(a for a, _ in spans), max(b for _, b in spans)
    rest = instance_prompt[end:].split()
    return (instance_prompt[start:end] + (" " + rest[0] if rest else "")).strip(" .,")
