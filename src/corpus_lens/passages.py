"""Documents -> passages with character offsets.

A passage is a run of whole paragraphs (blank-line separated) merged until it holds at least
``min_words`` words; a paragraph longer than ``max_words`` is cut at sentence ends, or at a word
boundary when a sentence itself is too long. Offsets index the original document string, so
``text[char_start:char_end]`` gives the passage back exactly and a policy can cut it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?\"'\u201d])\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class PassageSpec:
    """Bounds for passage splitting, in whitespace-separated words."""

    min_words: int = 40
    max_words: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.min_words <= self.max_words:
            raise ValueError(
                f"passage bounds need 0 < min_words <= max_words, got "
                f"min_words={self.min_words}, max_words={self.max_words}"
            )


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Spans of non-blank paragraphs, whitespace trimmed at both ends."""
    spans = []
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    trimmed = []
    for a, b in spans:
        chunk = text[a:b]
        stripped = chunk.strip()
        if stripped:
            a += len(chunk) - len(chunk.lstrip())
            trimmed.append((a, a + len(stripped)))
    return trimmed


def _cut_long(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    """Cut one over-long span into pieces of at most ``max_words`` words.

    Whole sentences are packed greedily; a sentence longer than ``max_words`` is cut at word
    boundaries. Sentences are found with one regex pass, so this stays linear in the span.
    """
    sentences = []
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        sentences.append((pos, m.start()))
        pos = m.end()
    sentences.append((pos, end))
    pieces: list[tuple[int, int]] = []
    cur_start, cur_end, cur_words = -1, -1, 0
    for a, b in sentences:
        n = len(text[a:b].split())
        if n == 0:
            continue
        if n > max_words:
            if cur_words:
                pieces.append((cur_start, cur_end))
                cur_words = 0
            words = [m.span() for m in _WORD.finditer(text, a, b)]
            for i in range(0, len(words), max_words):
                chunk = words[i : i + max_words]
                pieces.append((chunk[0][0], chunk[-1][1]))
            continue
        if cur_words and cur_words + n > max_words:
            pieces.append((cur_start, cur_end))
            cur_words = 0
        if not cur_words:
            cur_start = a
        cur_end, cur_words = b, cur_words + n
    if cur_words:
        pieces.append((cur_start, cur_end))
    return pieces


def split_passages(text: str, spec: PassageSpec = PassageSpec()) -> list[tuple[int, int]]:
    """Split a document into passage spans ``(char_start, char_end)``.

    Args:
        text: the document.
        spec: word bounds for passages.

    Returns:
        Spans in document order, non-overlapping, each within ``spec.max_words`` words; all
        words of the document are covered by exactly one span.

    Example:
        >>> split_passages("One two.\\n\\nThree four.", PassageSpec(min_words=1, max_words=5))
        [(0, 8), (10, 21)]
    """
    pieces: list[tuple[int, int, int]] = []
    for a, b in _paragraphs(text):
        n = len(text[a:b].split())
        if n > spec.max_words:
            pieces.extend((x, y, len(text[x:y].split())) for x, y in _cut_long(text, a, b, spec.max_words))
        else:
            pieces.append((a, b, n))
    passages: list[tuple[int, int]] = []
    counts: list[int] = []
    for a, b, n in pieces:
        if passages and counts[-1] < spec.min_words and counts[-1] + n <= spec.max_words:
            passages[-1] = (passages[-1][0], b)
            counts[-1] += n
        else:
            passages.append((a, b))
            counts.append(n)
    # A short tail is folded into its predecessor when that fits.
    if len(passages) > 1 and counts[-1] < spec.min_words and counts[-2] + counts[-1] <= spec.max_words:
        passages[-2:] = [(passages[-2][0], passages[-1][1])]
    return passages


def count_words(text: str) -> int:
    """Whitespace word count, the unit of every word figure in counts and reports."""
    return len(text.split())
