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
    """Cut one over-long span into pieces of at most ``max_words`` words."""
    words = [m.span() for m in _WORD.finditer(text, start, end)]
    # Sentence-end word indices: the piece may end after word i when word i ends a sentence.
    ends_sentence = [
        _SENTENCE_END.match(text, b) is not None or b == end for _, b in words
    ]
    pieces = []
    i = 0
    while i < len(words):
        j = min(i + max_words, len(words))
        if j < len(words):
            # Prefer the last sentence end in the second half of the window.
            for k in range(j - 1, i + max_words // 2 - 1, -1):
                if ends_sentence[k]:
                    j = k + 1
                    break
        pieces.append((words[i][0], words[j - 1][1]))
        i = j
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
    pieces: list[tuple[int, int]] = []
    for a, b in _paragraphs(text):
        n = len(_WORD.findall(text, a, b))
        if n > spec.max_words:
            pieces.extend(_cut_long(text, a, b, spec.max_words))
        else:
            pieces.append((a, b))
    passages: list[tuple[int, int]] = []
    count = 0
    for a, b in pieces:
        n = len(_WORD.findall(text, a, b))
        if passages and count < spec.min_words and count + n <= spec.max_words:
            passages[-1] = (passages[-1][0], b)
            count += n
        else:
            passages.append((a, b))
            count = n
    # A short tail is folded into its predecessor when that fits.
    if len(passages) > 1 and count < spec.min_words:
        prev_a, _ = passages[-2]
        prev_n = len(_WORD.findall(text, prev_a, passages[-2][1]))
        if prev_n + count <= spec.max_words:
            passages[-2:] = [(prev_a, passages[-1][1])]
    return passages


def count_words(text: str) -> int:
    """Whitespace word count, the unit of every word figure in counts and reports."""
    return len(text.split())
