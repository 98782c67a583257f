"""Policies: labels -> keep / drop / weight, and the filtered, reweighted and excluded shards.

A policy is TOML. ``[rules]`` maps ``"<depiction>"`` or ``"<depiction>.<mode>"`` to ``"keep"``,
``"drop"`` or a weight (the more specific key wins; unlisted labels keep weight 1).
``[tags]`` maps a behaviour tag to a weight (a malevolent passage takes the smallest of its
rule and its tags' weights). ``duplicate_copies`` is the weight of near-duplicate copies
beyond their cluster's representative. ``write_outputs = false`` makes an audit-only policy.

Example:
    [rules]
    "malevolent.fiction" = 0.25
    "malevolent" = 0.5
    "benevolent" = 2
    duplicate_copies = 0
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from corpus_lens import io
from corpus_lens.errors import ConfigError
from corpus_lens.schema import DEPICTIONS, MODES, TAGS

PRESETS_DIR = Path(__file__).parent / "policies"


@dataclass(frozen=True)
class Policy:
    """A resolved policy."""

    name: str
    rules: dict[str, float] = field(default_factory=dict)
    tags: dict[str, float] = field(default_factory=dict)
    duplicate_copies: float | None = None
    write_outputs: bool = True

    def describe(self) -> dict[str, Any]:
        """The policy as written to the manifest."""
        return {
            "name": self.name,
            "rules": self.rules,
            "tags": self.tags,
            "duplicate_copies": self.duplicate_copies,
            "write_outputs": self.write_outputs,
        }

    def passage_weight(self, depiction: str, mode: str, tags: list[str], is_copy: bool) -> tuple[float, str]:
        """Weight of one passage and the rule that set it ('' when no rule applies)."""
        reason = ""
        weight = 1.0
        for key in (f"{depiction}.{mode}", depiction):
            if key in self.rules:
                weight, reason = self.rules[key], f"rule {key}"
                break
        for tag in tags:
            if tag in self.tags and self.tags[tag] < weight:
                weight, reason = self.tags[tag], f"tag {tag}"
        if is_copy and self.duplicate_copies is not None and self.duplicate_copies < weight:
            weight, reason = self.duplicate_copies, "duplicate copy"
        return weight, reason


def _weight(value: Any, where: str) -> float:
    if value == "keep":
        return 1.0
    if value == "drop":
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise ConfigError(f"policy {where}: expected 'keep', 'drop' or a weight >= 0, got {value!r}")


def parse_policy(name: str, data: dict[str, Any]) -> Policy:
    """Check and resolve a policy's TOML content.

    Raises:
        ConfigError: for an unknown key, label, mode or tag (listing what is available).
    """
    known = {"rules", "tags", "duplicate_copies", "write_outputs", "description"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"policy {name}: unknown key(s) {sorted(unknown)}; available: {sorted(known)}")
    rules = {}
    for key, value in data.get("rules", {}).items():
        depiction, _, mode = key.partition(".")
        if depiction not in DEPICTIONS or (mode and mode not in MODES):
            raise ConfigError(
                f"policy {name}: unknown rule {key!r}; expected <depiction> or <depiction>.<mode> "
                f"with depiction in {list(DEPICTIONS)} and mode in {list(MODES)}"
            )
        rules[key] = _weight(value, f"{name} rule {key}")
    tags = {}
    for key, value in data.get("tags", {}).items():
        if key not in TAGS:
            raise ConfigError(f"policy {name}: unknown tag {key!r}; available: {list(TAGS)}")
        tags[key] = _weight(value, f"{name} tag {key}")
    copies = data.get("duplicate_copies")
    return Policy(
        name=name,
        rules=rules,
        tags=tags,
        duplicate_copies=None if copies is None else _weight(copies, f"{name} duplicate_copies"),
        write_outputs=bool(data.get("write_outputs", True)),
    )


def presets() -> list[str]:
    """Names of the shipped policies."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_policy(name_or_path: str) -> Policy:
    """Load a shipped preset by name, or a policy file by path.

    Raises:
        ConfigError: when neither a preset nor a readable file has that name.
    """
    path = PRESETS_DIR / f"{name_or_path}.toml"
    name = name_or_path
    if not path.is_file():
        path = Path(name_or_path)
        name = path.stem
        if not path.is_file():
            raise ConfigError(f"unknown policy {name_or_path!r}: not a preset ({', '.join(presets())}) nor a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {path}: invalid TOML: {exc}") from None
    return parse_policy(name, data)


def copies_of(weight: float, doc_id: str, seed: int) -> int:
    """How many times a document of weight w appears in the materialized resample.

    floor(w) times, plus once more with probability w - floor(w), decided by a hash of
    (seed, id) so that retries and reruns agree.
    """
    whole = int(np.floor(weight))
    frac = weight - whole
    u = int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "big") / 2**64
    return whole + int(u < frac)


def cut_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """Remove character spans from a text, joining what remains with a blank line."""
    pieces, pos = [], 0
    for a, b in sorted(spans):
        pieces.append(text[pos:a].strip())
        pos = max(pos, b)
    pieces.append(text[pos:].strip())
    return "\n\n".join(p for p in pieces if p)


def _decisions(annotations: pa.Table, policy: Policy) -> dict[int, list[tuple[int, int, float, str]]]:
    """Per shard row: (start, end, weight, reason) of each passage a rule applies to."""
    out: dict[int, list[tuple[int, int, float, str]]] = {}
    cols = annotations.select(
        ["row", "char_start", "char_end", "depiction", "mode", "tags", "dup_is_representative"]
    ).to_pylist()
    for rec in cols:
        is_copy = rec["dup_is_representative"] is False
        weight, reason = policy.passage_weight(rec["depiction"], rec["mode"], rec["tags"] or [], is_copy)
        if reason:
            out.setdefault(rec["row"], []).append(
                (rec["char_start"], rec["char_end"], weight, f"{rec['depiction']}/{rec['mode']}: {reason}")
            )
    return out


def apply_shard(
    shard_url: str,
    shard_key: str,
    output: str,
    text_column: str,
    id_column: str,
    batch_rows: int,
    policy: Policy,
    granularity: str,
    seed: int,
    annotations_dir: str | None = None,
) -> dict[str, Any]:
    """Apply a policy to one shard using its annotations; write filtered/reweighted/excluded.

    Returns:
        Stats with ``rows_kept`` and ``rows_dropped`` (for the reconciliation) and word counts
        before and after per document depiction.
    """
    from corpus_lens.annotate import doc_ids, row_failures

    if not policy.write_outputs:
        return {}
    ann_dir = annotations_dir or io.join(output, "annotations")
    annotations = io.read_table(io.join(ann_dir, f"{shard_key}.parquet"))
    documents = io.read_table(io.join(ann_dir, f"{shard_key}.documents.parquet"))
    decisions = _decisions(annotations, policy)
    doc_label = dict(zip(documents.column("row").to_pylist(), documents.column("depiction").to_pylist()))
    stats: dict[str, Any] = {
        "rows_kept": 0,
        "rows_dropped": 0,
        "passages_cut": 0,
        "words_before": {},
        "words_filtered": {},
        "words_reweighted": {},
        "rows_materialized": 0,
        "drop_reasons": {},
    }
    filtered, weighted, materialized, excluded = [], [], [], []
    pf = io.open_parquet(shard_url)
    seen: set[str] = set()
    first = 0
    for batch in io.iter_batches(pf, shard_url, None, batch_rows):
        texts = batch.column(text_column)
        ids = doc_ids(batch, shard_url, id_column, first)
        texts, bad, _ = row_failures(texts, ids, seen)
        keep_rows, new_texts, weights, cuts, drop_rows, drop_reasons = [], [], [], [], [], []
        for i in range(len(batch)):
            if bad[i]:
                continue
            row = first + i
            text = texts[i].as_py()
            words = len(text.split())
            label = doc_label.get(row, "none")
            stats["words_before"][label] = stats["words_before"].get(label, 0) + words
            rules = decisions.get(row, [])
            if granularity == "document":
                ws = [w for _, _, w, _ in rules]
                weight = 1.0 if not ws else (min(ws) if min(ws) < 1 else max(ws))
                reason = "; ".join(sorted({r for _, _, w, r in rules if w == weight})) if rules else ""
                new_text, cut = text, []
            else:
                cut = [(a, b, r) for a, b, w, r in rules if w == 0]
                rest = [w for _, _, w, _ in rules if w > 0]
                weight = 1.0 if not rest else (min(rest) if min(rest) < 1 else max(rest))
                new_text = cut_spans(text, [(a, b) for a, b, _ in cut]) if cut else text
                reason = "; ".join(sorted({r for _, _, r in cut}))
                if cut and not new_text:
                    weight = 0.0
            if weight == 0:
                drop_rows.append(i)
                drop_reasons.append(reason or "weight 0")
                stats["drop_reasons"][reason or "weight 0"] = stats["drop_reasons"].get(reason or "weight 0", 0) + 1
                continue
            stats["passages_cut"] += len(cut)
            keep_rows.append(i)
            new_texts.append(new_text)
            weights.append(weight)
            cuts.append([{"char_start": a, "char_end": b, "reason": r} for a, b, r in cut])
            after = len(new_text.split())
            stats["words_filtered"][label] = stats["words_filtered"].get(label, 0) + after
            stats["words_reweighted"][label] = stats["words_reweighted"].get(label, 0) + after * weight
        stats["rows_kept"] += len(keep_rows)
        stats["rows_dropped"] += len(drop_rows)
        kept = batch.take(pa.array(keep_rows, pa.int64()))
        idx = kept.schema.get_field_index(text_column)
        kept = pa.Table.from_batches([kept]).set_column(
            idx, text_column, pa.array(new_texts, kept.schema.field(text_column).type)
        )
        kept = kept.append_column(
            "corpuslens_cuts",
            pa.array(
                cuts,
                pa.list_(pa.struct([("char_start", pa.int64()), ("char_end", pa.int64()), ("reason", pa.string())])),
            ),
        )
        filtered.append(kept)
        w = kept.append_column("weight", pa.array(weights, pa.float64()))
        weighted.append(w)
        n_copies = [copies_of(wt, ids[i], seed) for wt, i in zip(weights, keep_rows)]
        stats["rows_materialized"] += sum(n_copies)
        materialized.append(kept.take(pa.array(np.repeat(np.arange(len(keep_rows)), n_copies), pa.int64())))
        dropped = pa.Table.from_batches([batch.take(pa.array(drop_rows, pa.int64()))])
        excluded.append(dropped.append_column("exclusion_reason", pa.array(drop_reasons, pa.string())))
        first += len(batch)
    for folder, tables in (
        ("filtered", filtered),
        ("reweighted", weighted),
        ("reweighted_materialized", materialized),
        ("excluded", excluded),
    ):
        if tables:
            table = pa.concat_tables(tables)
        else:
            table = pf.schema_arrow.empty_table()
        io.atomic_write_table(io.join(output, folder, f"{shard_key}.parquet"), table)
    return stats
