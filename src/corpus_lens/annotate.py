"""Scan one part of a shard: stream it, prefilter, split, classify, and stage its results.

``scan_shard`` is a plain function of one shard part (a contiguous row range; a small shard is
one part); the pipeline runs it on Dask workers. It streams the rows in batches, so memory does
not grow with the shard, and writes its results under ``OUTPUT/_work/<shard key>/<part>/`` with
a completion marker written last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus_lens import io
from corpus_lens.classify import CascadeSpec, classify_passages, lexicon_of
from corpus_lens.dedup import DedupSettings, passage_id, signatures
from corpus_lens.errors import InputError
from corpus_lens.passages import PassageSpec, split_passages
from corpus_lens.schema import ANNOTATION_SCHEMA, DEPICTIONS, DOCUMENT_SCHEMA, MODES, STAGES
from corpus_lens.stats import bump, merge

log = logging.getLogger(__name__)

_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/]*@)?(?P<host>[^/:?#]+)"
FAILURE_SAMPLE = 50  # failed rows listed per shard (all are counted, by reason)


@dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs for one part of a shard: small, picklable, no models inside.

    Part ``part`` of ``parts`` covers rows ``[n * part // parts, n * (part + 1) // parts)`` of a
    shard of ``n`` rows, so the pipeline can split a shard without reading its footer.
    """

    shard: io.Shard
    output: str
    text_column: str
    id_column: str
    batch_rows: int
    passages: PassageSpec
    cascade: CascadeSpec
    device: str
    precision: str
    dedup: DedupSettings
    dedup_labels: tuple[str, ...]
    config_hash: str
    part: int = 0
    parts: int = 1

    @property
    def work(self) -> str:
        return io.join(self.output, "_work", self.shard.key, f"part-{self.part:05d}-of-{self.parts:05d}")

    def rows(self, n: int) -> tuple[int, int]:
        return n * self.part // self.parts, n * (self.part + 1) // self.parts


def _check_columns(schema: pa.Schema, job: ShardJob) -> None:
    names = schema.names
    if job.text_column not in names:
        raise InputError(
            f"shard {job.shard.url}: no text column {job.text_column!r}; it has columns "
            f"{names}. Is --text-column correct?"
        )
    kind = schema.field(job.text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise InputError(
            f"shard {job.shard.url}: text column {job.text_column!r} has type {kind}; expected a string column"
        )


def _group_keys(batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """Per-row keys for the breakdowns: `source` and URL host, when those columns exist."""
    keys: dict[str, pa.Array] = {}
    names = batch.schema.names
    if "source" in names:
        keys["by_source"] = pc.fill_null(pc.cast(batch.column("source"), pa.string()), "(null)")
    if "url" in names:
        hosts = pc.struct_field(pc.extract_regex(pc.cast(batch.column("url"), pa.string()), _HOST), "host")
        keys["by_host"] = pc.fill_null(pc.utf8_lower(hosts), "(none)")
    return keys


def _count_documents(
    stats: dict[str, Any], labels: np.ndarray, words: np.ndarray, groups: dict[str, pa.Array], ok: np.ndarray
) -> None:
    """Documents and words per document label, overall and per group key, aggregated in Arrow
    (this runs over every document of a batch, so no per-row Python)."""
    docs = pa.table({"label": pa.array(labels[ok], pa.string()), "words": pa.array(words[ok], pa.int64())})
    for rec in docs.group_by("label").aggregate([("words", "sum"), ("words", "count")]).to_pylist():
        bump(stats, "document_depiction", rec["label"], by=rec["words_count"])
        bump(stats, "document_words", rec["label"], by=rec["words_sum"])
    mask = pa.array(ok)
    for group, keys in groups.items():
        table = docs.append_column("key", keys.filter(mask))
        for rec in table.group_by(["key", "label"]).aggregate([("words", "sum"), ("words", "count")]).to_pylist():
            bump(stats, group, rec["key"], "documents", by=rec["words_count"])
            bump(stats, group, rec["key"], "words", by=rec["words_sum"])
            bump(stats, group, rec["key"], "depiction", rec["label"], by=rec["words_count"])


def _doc_row(doc_id: str, row: int, words: int, n_passages: int, ann: pa.Table, job: ShardJob) -> dict[str, Any]:
    deps = ann.column("depiction").to_pylist()
    modes = ann.column("mode").to_pylist()
    counts = {d: deps.count(d) for d in DEPICTIONS}
    depiction = next((d for d in DEPICTIONS if counts[d]), "none")
    same = [m for d, m in zip(deps, modes) if d == depiction] or modes or ["other"]
    mode = max(MODES, key=lambda m: (same.count(m), -MODES.index(m)))
    mal = ann.column("score_malevolent").to_numpy()
    ben = ann.column("score_benevolent").to_numpy()
    return {
        "doc_id": doc_id,
        "shard": job.shard.url,
        "row": row,
        "words": words,
        "passages": n_passages,
        "depiction": depiction,
        "mode": mode,
        **{f"passages_{d}": counts[d] for d in DEPICTIONS},
        "max_score_malevolent": float(mal.max()) if len(mal) else 0.0,
        "max_score_benevolent": float(ben.max()) if len(ben) else 0.0,
    }


def _utf8_invalid(texts: pa.Array) -> np.ndarray:
    """Rows whose bytes are not valid UTF-8 (Arrow trusts the file; a bad writer can break that)."""
    try:
        texts.validate(full=True)
        return np.zeros(len(texts), dtype=bool)
    except pa.ArrowInvalid:
        raw = texts.cast(pa.binary()).to_pylist()
        bad = np.zeros(len(texts), dtype=bool)
        for i, b in enumerate(raw):
            if b is not None:
                try:
                    b.decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
        return bad


def row_failures(texts: pa.Array, ids: list[str], seen_ids: set[str]) -> tuple[pa.Array, np.ndarray, list[str]]:
    """Rows that cannot be scanned, with the reason: null text, invalid UTF-8, or an id that an
    earlier row of the shard has (failed or not). Returns the texts with failed rows set to
    null, the mask and the reasons.

    ``seen_ids`` carries the ids of earlier batches of the same shard and is updated.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    null = pc.is_null(texts).to_numpy(zero_copy_only=False)
    invalid = _utf8_invalid(texts)
    bad = null | invalid
    reasons = [""] * len(ids)
    for i, doc_id in enumerate(ids):
        if null[i]:
            reasons[i] = "null text"
        elif invalid[i]:
            reasons[i] = "invalid UTF-8 in text"
        elif doc_id in seen_ids:
            bad[i] = True
            reasons[i] = "duplicate id (an earlier row of this shard has it)"
        seen_ids.add(doc_id)  # a failed row's id counts too: a part sees only earlier ids
    if invalid.any():
        texts = pa.array(
            [None if invalid[i] else v for i, v in enumerate(texts.cast(pa.binary()).to_pylist())], pa.binary()
        ).cast(pa.string())
    return texts, bad, reasons


def doc_ids(batch: pa.RecordBatch, shard_url: str, id_column: str, first_row: int) -> list[str]:
    """Document ids: the id column as strings, or ``<shard file name>#<row>`` without one."""
    if id_column in batch.schema.names:
        ids = pc.cast(batch.column(id_column), pa.string())
        return [f"<null id>#{first_row + i}" if v is None else v for i, v in enumerate(ids.to_pylist())]
    name = shard_url.rstrip("/").rsplit("/", 1)[-1]
    return [f"{name}#{first_row + i}" for i in range(len(batch))]


def _process_batch(
    batch: pa.RecordBatch, first_row: int, job: ShardJob, seen_ids: set[str]
) -> tuple[pa.Table, list[dict], dict[str, Any]]:
    lexicon = lexicon_of(job.cascade.directory)
    stats: dict[str, Any] = {"rows_in": len(batch)}
    texts = batch.column(job.text_column)
    ids = doc_ids(batch, job.shard.url, job.id_column, first_row)
    groups = _group_keys(batch)

    texts, bad, reasons = row_failures(texts, ids, seen_ids)
    failures = []
    for i in np.flatnonzero(bad):
        bump(stats, "failed_reasons", reasons[i])
        failures.append({"row": first_row + int(i), "doc_id": ids[i], "reason": reasons[i]})
    stats["rows_failed"] = int(bad.sum())
    stats["failures"] = failures[:FAILURE_SAMPLE]

    ok = ~bad
    words = pc.fill_null(pc.count_substring_regex(texts, r"\S+"), 0).to_numpy(zero_copy_only=False)
    chars = pc.fill_null(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False)
    hits = lexicon.match_array(texts).to_numpy(zero_copy_only=False) & ok
    stats["documents"] = int(ok.sum())
    stats["words"] = int(words[ok].sum())
    stats["characters"] = int(chars[ok].sum())
    stats["documents_with_hit"] = int(hits.sum())

    # Split only documents with a hit.
    doc_of, p_index, p_start, p_end, p_text = [], [], [], [], []
    n_split = np.zeros(len(batch), dtype=np.int64)
    for i in np.flatnonzero(hits):
        text = texts[i].as_py()
        spans = split_passages(text, job.passages)
        n_split[i] = len(spans)
        for k, (a, b) in enumerate(spans):
            doc_of.append(i)
            p_index.append(k)
            p_start.append(a)
            p_end.append(b)
            p_text.append(text[a:b])
    stats["passages"] = int(n_split.sum())
    if p_text:
        p_hit = lexicon.match_array(pa.array(p_text, pa.string())).to_numpy(zero_copy_only=False)
    else:
        p_hit = np.zeros(0, dtype=bool)
    # A passage goes on when it or a neighbour in the same document has a hit: fiction names
    # its robot once and then says "it" or "he" for paragraphs.
    doc_arr = np.array(doc_of, dtype=np.int64)
    near = p_hit.copy()
    if len(p_hit) > 1:
        same_prev = doc_arr[1:] == doc_arr[:-1]
        near[1:] |= p_hit[:-1] & same_prev
        near[:-1] |= p_hit[1:] & same_prev
    # fastText reads every passage of these documents; those that neither the lexicon (with the
    # neighbour rule) nor fastText's AI tier pass stop here and are only counted.
    result = classify_passages(p_text, job.cascade, job.device, lexicon_hits=near, precision=job.precision)
    went_on = pc.not_equal(result.column("stage"), "prefilter")
    keep = np.flatnonzero(went_on.to_numpy(zero_copy_only=False))
    result = result.filter(went_on)
    stats["passages_stopped_at_prefilter"] = len(p_text) - len(keep)
    esc_text = [p_text[j] for j in keep]
    p_words = np.array([len(t.split()) for t in esc_text], dtype=np.int32)
    doc_idx = np.array([doc_of[j] for j in keep], dtype=np.int64)
    ann = pa.table(
        {
            "doc_id": pa.array([ids[i] for i in doc_idx], pa.string()),
            "shard": pa.array([job.shard.url] * len(keep), pa.string()),
            "row": pa.array(doc_idx + first_row, pa.int64()),
            "passage_index": pa.array([p_index[j] for j in keep], pa.int32()),
            "char_start": pa.array([p_start[j] for j in keep], pa.int64()),
            "char_end": pa.array([p_end[j] for j in keep], pa.int64()),
            "words": pa.array(p_words, pa.int32()),
            "text": pa.array(esc_text, pa.string()),
            **{name: result.column(name) for name in result.schema.names},
            "dup_cluster": pa.nulls(len(keep), pa.string()),
            "dup_is_representative": pa.nulls(len(keep), pa.bool_()),
        },
        schema=ANNOTATION_SCHEMA,
    )

    stage_counts = {s: 0 for s in STAGES[1:]}
    for s in result.column("stage").to_pylist():
        stage_counts[s] += 1
    stats["stage"] = {"prefilter": int(ok.sum()), **stage_counts}
    deps = ann.column("depiction").to_pylist()
    modes = ann.column("mode").to_pylist()
    for d, m, w, tags in zip(deps, modes, p_words, ann.column("tags").to_pylist()):
        bump(stats, "passage_depiction", d)
        bump(stats, "passage_words", d, by=int(w))
        bump(stats, "depiction_by_mode", d, m)
        for t in tags:
            bump(stats, "tags", t)

    doc_rows = []
    doc_label = np.array(["none"] * len(batch), dtype=object)
    if len(keep):
        order = np.argsort(doc_idx, kind="stable")
        bounds = np.flatnonzero(np.diff(doc_idx[order])) + 1
        for chunk in np.split(order, bounds):
            i = int(doc_idx[chunk[0]])
            row = _doc_row(ids[i], first_row + i, int(words[i]), int(n_split[i]), ann.take(chunk), job)
            doc_label[i] = row["depiction"]
            doc_rows.append(row)
    _count_documents(stats, doc_label, words, groups, ok)
    for group, keys in groups.items():
        key_of = keys.to_numpy(zero_copy_only=False)
        for d, i in zip(deps, doc_idx):
            bump(stats, group, key_of[i], "passages", d)
    return ann, doc_rows, stats


def _part_batches(pf: Any, job: ShardJob, seen_ids: set[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The part's rows in batches, with their first row number.

    Only the row groups that hold the part are decoded. The ids of the rows before it (the id
    column alone) go into ``seen_ids``, so a duplicate id is caught across parts as in one pass.
    """
    start, stop = job.rows(pf.metadata.num_rows)
    if start >= stop:
        return
    sizes = np.array([pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    ends = np.cumsum(sizes)
    first = int(np.searchsorted(ends, start, side="right"))  # the row group holding row `start`
    if start > 0 and job.id_column in pf.schema_arrow.names:
        row = 0
        for batch in io.iter_batches(pf, job.shard.url, [job.id_column], job.batch_rows, list(range(first + 1))):
            before = batch.slice(0, min(len(batch), start - row))
            seen_ids.update(doc_ids(before, job.shard.url, job.id_column, row))
            row += len(batch)
            if row >= start:  # the rest of this row group belongs to the part itself
                break
    groups = [g for g in range(first, len(ends)) if ends[g] - sizes[g] < stop]
    row = int(ends[first - 1]) if first else 0
    for batch in io.iter_batches(pf, job.shard.url, None, job.batch_rows, groups):
        lo, hi = row, row + len(batch)
        row = hi
        if lo >= stop:
            break
        if hi > start:
            a = max(lo, start)
            yield a, batch.slice(a - lo, min(hi, stop) - a)


def scan_shard(job: ShardJob) -> dict[str, Any]:
    """Scan one part of a shard and stage its results; returns the part's stats.

    Raises:
        InputError: when the shard cannot be read or lacks a string text column.
    """
    started = time.time()
    pf = io.open_parquet(job.shard.url)
    _check_columns(pf.schema_arrow, job)
    stats: dict[str, Any] = {}
    tables, doc_rows = [], []
    seen_ids: set[str] = set()
    for first_row, batch in _part_batches(pf, job, seen_ids):
        ann, docs, batch_stats = _process_batch(batch, first_row, job, seen_ids)
        tables.append(ann)
        doc_rows.extend(docs)
        stats = merge(stats, batch_stats)
    stats.setdefault("rows_in", 0)
    stats.setdefault("rows_failed", 0)
    stats["failures"] = stats.get("failures", [])[:FAILURE_SAMPLE]
    ann = pa.concat_tables(tables) if tables else ANNOTATION_SCHEMA.empty_table()
    docs = pa.Table.from_pylist(doc_rows, schema=DOCUMENT_SCHEMA)

    labels = job.dedup_labels
    flagged = ann if "*" in labels else ann.filter(pc.is_in(ann.column("depiction"), pa.array(labels)))
    pids = [
        passage_id(d, k, job.shard.key)
        for d, k in zip(flagged.column("doc_id").to_pylist(), flagged.column("passage_index").to_pylist())
    ]
    sigs = signatures(flagged.column("text").to_pylist(), job.dedup)
    sig_table = pa.table(
        {
            "pid": pa.array(pids, pa.string()),
            "depiction": flagged.column("depiction"),
            "signature": pa.FixedSizeListArray.from_arrays(pa.array(sigs.reshape(-1), pa.uint32()), job.dedup.num_perm),
        }
    )
    io.atomic_write_table(io.join(job.work, "annotations.parquet"), ann)
    io.atomic_write_table(io.join(job.work, "documents.parquet"), docs)
    io.atomic_write_table(io.join(job.work, "signatures.parquet"), sig_table)
    stats["seconds"] = round(time.time() - started, 3)
    io.atomic_write_json(io.join(job.work, "stats.json"), stats)
    io.atomic_write_json(
        io.join(job.work, "done.json"), {"config_hash": job.config_hash, "shard": job.shard.url, "part": job.part}
    )
    log.info(
        "shard %s part %d/%d: %d rows, %d with a lexicon hit, %d passages classified, %.1fs",
        job.shard.url,
        job.part + 1,
        job.parts,
        stats["rows_in"],
        stats.get("documents_with_hit", 0),
        len(ann),
        stats["seconds"],
    )
    return stats
