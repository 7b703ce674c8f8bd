"""Tokenising long texts in bounded calls.

A tokenizer given a 100 MB string holds its offsets and encodings whole (GBs). :func:`token_stream` cuts a
text into pieces of about ``TOKENIZE_CHARS`` characters and joins their ids where they agree, re-tokenising
a short overlap around each cut so the ids are those of one call on the whole text.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import torch

from .cache import stable_hash
from .documents import TextFile


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies a tokenizer by its vocabulary and special-token behaviour (for cache keys)."""
    vocab = sorted(tokenizer.get_vocab().items())
    probe = tokenizer("a b").input_ids
    return stable_hash([type(tokenizer).__name__, vocab, probe])


# A long text is tokenised in calls of TOKENIZE_CHARS characters (one call on a 60 MB file held about 150
# bytes a character): each call overlaps the previous one by SYNC_CHARS, and the two are joined where they
# give the same SYNC_TOKENS tokens at the same places, so the ids are those of one call on the whole text.
TOKENIZE_CHARS = 1 << 18
SYNC_CHARS = 1 << 13
SYNC_TOKENS = 32


class _Text:
    """The text ``pieces`` make when joined, by character position: read only as far ahead as asked, and
    forgotten behind the position :meth:`forget` is given."""

    def __init__(self, pieces: Iterable[str]):
        self._pieces = iter(pieces)
        self._buffer, self._start, self._ended = "", 0, False  # _buffer: characters from _start on

    def _read_to(self, end: int) -> None:
        parts, have = [self._buffer], self._start + len(self._buffer)
        while have < end and not self._ended:
            piece = next(self._pieces, None)
            if piece is None:
                self._ended = True
            else:
                parts.append(piece)
                have += len(piece)
        if len(parts) > 1:
            self._buffer = "".join(parts)

    def window(self, start: int, size: int) -> str:
        """Characters ``[start, start + size)`` (fewer at the end)."""
        self._read_to(start + size)
        return self._buffer[start - self._start : start - self._start + size]

    def forget(self, before: int) -> None:
        """Nothing before character ``before`` is asked for again (dropped once it is half the buffer)."""
        if before - self._start > len(self._buffer) // 2:
            self._buffer, self._start = self._buffer[before - self._start :], before

    def ends_by(self, end: int) -> bool:
        """Whether the text has at most ``end`` characters."""
        self._read_to(end + 1)
        return self._start + len(self._buffer) <= end


def _special_ids(tokenizer) -> tuple[list[int], list[int]] | None:
    """The special tokens ``tokenizer`` puts before and after a text (LLaMA's BOS), or None where a text's
    ids are not its plain ids between those (or the tokenizer gives no character offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    full = tokenizer("a b").input_ids
    plain = tokenizer("a b", add_special_tokens=False).input_ids
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k], full[k + len(plain) :]
    return None


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoding["input_ids"], [tuple(place) for place in encoding["offset_mapping"]]


def _joint(current, following, shift: int, keep: int) -> tuple[int, int] | None:
    """``(i, j)``: where ``following`` (tokenised from character ``shift`` of ``current``'s text) starts giving
    ``current``'s tokens: ``current[i : i + SYNC_TOKENS]`` and ``following[j : j + SYNC_TOKENS]`` have the same
    ids at the same characters, with ``i >= keep``; None if they agree nowhere."""
    ids, places = current
    next_ids, next_places = following
    first = len(ids)
    while first > keep and places[first - 1][0] >= shift:
        first -= 1
    at = {}
    for i in range(first, len(ids) - SYNC_TOKENS + 1):
        at.setdefault((ids[i], places[i][0] - shift, places[i][1] - shift), i)
    for j in range(len(next_ids) - SYNC_TOKENS + 1):
        i = at.get((next_ids[j], *next_places[j]))
        if i is None or ids[i : i + SYNC_TOKENS] != next_ids[j : j + SYNC_TOKENS]:
            continue
        if [(a - shift, b - shift) for a, b in places[i : i + SYNC_TOKENS]] == next_places[j : j + SYNC_TOKENS]:
            return i, j
    return None


def _long_text_ids(tokenizer, text: _Text, max_tokens: int | None) -> Iterator[list[int]]:
    """The plain ids (no special tokens) of a text longer than one call, a call's worth at a time, until the
    text ends or ``max_tokens`` are given."""
    start, keep, size, given = 0, 0, TOKENIZE_CHARS, 0
    current = _encode(tokenizer, text.window(start, size))
    while not text.ends_by(start + size):
        shift = size - SYNC_CHARS
        following = _encode(tokenizer, text.window(start + shift, TOKENIZE_CHARS))
        joint = _joint(current, following, shift, keep)
        if joint is None:  # no agreement in the overlap (a run of white space longer than it): a longer call
            size *= 2
            wider = _encode(tokenizer, text.window(start, size))
            anchor = slice(0, keep + SYNC_TOKENS)
            if wider[0][anchor] != current[0][anchor] or wider[1][anchor] != current[1][anchor]:
                raise RuntimeError("the tokenizer gave other tokens at the start of a longer call; cannot join calls")
            current = wider
            continue
        i, j = joint
        yield current[0][keep:i]
        given += i - keep
        if max_tokens is not None and given >= max_tokens:
            return
        start, keep, size, current = start + shift, j, TOKENIZE_CHARS, following
        text.forget(start)
    yield current[0][keep:]


def token_stream(tokenizer, pieces: Iterable[str], max_tokens: int | None = None) -> torch.Tensor:
    """``tokenizer(text).input_ids`` (int32) of the text the strings ``pieces`` make when joined, read only as
    far as needed: a text of more than ``TOKENIZE_CHARS`` characters is tokenised in overlapping calls, joined
    where they agree (see above). With ``max_tokens``, a text is read and tokenised only until that many
    tokens from its start are known (the result may hold more)."""
    text = _Text(pieces)
    special = _special_ids(tokenizer)
    if special is None or text.ends_by(TOKENIZE_CHARS):  # one call, as on a short text
        return torch.tensor(tokenizer(text.window(0, sys.maxsize)).input_ids, dtype=torch.int32)
    before, after = special
    parts = [torch.tensor(before, dtype=torch.int32)]
    given = len(before)
    for ids in _long_text_ids(tokenizer, text, None if max_tokens is None else max_tokens - given):
        parts.append(torch.tensor(ids, dtype=torch.int32))
        given += len(ids)
    if max_tokens is None or given < max_tokens:
        parts.append(torch.tensor(after, dtype=torch.int32))
    return torch.cat(parts)


def _joined(documents: Iterable[str], separator: str = "\n\n") -> Iterator[str]:
    """The documents joined with ``separator``, as pieces (a .txt file's text in blocks, never whole)."""
    if isinstance(documents, TextFile):
        yield from documents.blocks()
        return
    for i, document in enumerate(documents):
        if i:
            yield separator
        yield document


def _tokenize_stream(tokenizer, texts: Iterable[str], max_tokens: int | None = None) -> torch.Tensor:
    """Join texts with blank lines and tokenise them as one text (one BOS at the start if the tokenizer adds
    one); with ``max_tokens``, only as far as that many tokens."""
    return token_stream(tokenizer, _joined(texts), max_tokens)


def _document_ids(tokenizer, document: str) -> torch.Tensor:
    """A document's ids (int64), a long one tokenised in bounded calls."""
    if len(document) <= TOKENIZE_CHARS:
        return tokenizer(document, return_tensors="pt").input_ids[0]
    return token_stream(tokenizer, [document]).long()
