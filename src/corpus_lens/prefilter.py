"""The lexicon prefilter: which documents and passages mention an AI entity at all.

The lexicon is compiled once into a single RE2 pattern and run by
``pyarrow.compute.match_substring_regex`` over whole Arrow arrays, so documents without a
mention are never split into passages in Python. The same pattern is valid for Python's ``re``,
which finds the spans for highlighting in the small set of passages that hit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from corpus_lens.errors import ModelError


@dataclass(frozen=True)
class Lexicon:
    """Terms that signal an AI entity: ``cased`` match their exact case, ``uncased`` any case."""

    cased: tuple[str, ...]
    uncased: tuple[str, ...]

    @classmethod
    def from_file(cls, path: Path) -> Lexicon:
        """Read a lexicon file with ``[cased]`` and ``[uncased]`` sections.

        Raises:
            ModelError: when the file is missing, a line sits outside a section, or a term is
                not a valid regular expression.
        """
        if not path.is_file():
            raise ModelError(f"lexicon file not found: {path}")
        sections: dict[str, list[str]] = {"cased": [], "uncased": []}
        current = None
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1]
                if current not in sections:
                    raise ModelError(f"{path}:{lineno}: unknown section [{current}]; expected [cased] or [uncased]")
                continue
            if current is None:
                raise ModelError(f"{path}:{lineno}: term before any [cased]/[uncased] section")
            try:
                re.compile(line)
            except re.error as exc:
                raise ModelError(f"{path}:{lineno}: invalid pattern {line!r}: {exc}") from exc
            sections[current].append(line)
        return cls(tuple(sections["cased"]), tuple(sections["uncased"]))

    @cached_property
    def pattern(self) -> str:
        """One regular expression valid for both RE2 and Python ``re``."""
        parts = []
        if self.cased:
            parts.append(r"\b(?:" + "|".join(self.cased) + r")\b")
        if self.uncased:
            parts.append(r"(?i:\b(?:" + "|".join(self.uncased) + r")\b)")
        return "|".join(parts) if parts else r"[^\s\S]"

    @cached_property
    def _compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    def match_array(self, texts: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Vectorized test over an Arrow string array; nulls come back False."""
        hits = pc.match_substring_regex(texts, self.pattern)
        return pc.fill_null(hits, False)

    def matches(self, text: str) -> bool:
        """Whether one string holds a lexicon term."""
        return self._compiled.search(text) is not None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of every lexicon term in ``text``."""
        return [m.span() for m in self._compiled.finditer(text)]
