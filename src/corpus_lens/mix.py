"""`corpuslens mix`: blend a corpus with positive-AI narratives to a target share of words.

The positive documents (Parquet or JSONL with a text column) are taken in a fixed order decided
by a hash of (seed, id), repeated when there are too few, until they make up ``target_share``
of the output's words (whitespace words, the unit of every word count in corpus_lens). They are
spread over the output shards (all of them, or only the last ``final_slice`` of them) and placed
inside each shard at positions decided by the same kind of hash, so reruns are byte-identical.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus_lens import io
from corpus_lens.errors import ConfigError, InputError


def _key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def _words(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(pc.count_substring_regex(texts, r"\S+"), 0).to_numpy(zero_copy_only=False)


def read_positive(paths: list[str], text_column: str, id_column: str) -> list[dict[str, str]]:
    """Positive documents as {id, text}, from Parquet shards or JSON-lines files.

    Raises:
        InputError: for a missing file, a missing text column or a bad JSON line.
    """
    docs: list[dict[str, str]] = []
    for path in paths:
        if path.endswith((".jsonl", ".json")):
            if not io.exists(path):
                raise InputError(f"positive corpus {path}: no such file")
            for lineno, rec in io.parse_jsonl(io.read_text(path).splitlines(), f"positive corpus {path}", text_column):
                docs.append({"id": str(rec.get(id_column, f"{path}#{lineno}")), "text": rec[text_column]})
            continue
        for shard in io.discover_shards([path]):
            table = io.read_table(shard.url)
            if text_column not in table.column_names:
                raise InputError(
                    f"positive corpus {shard.url}: no text column {text_column!r}; it has {table.column_names}"
                )
            ids = (
                table.column(id_column).to_pylist()
                if id_column in table.column_names
                else [f"{shard.url}#{i}" for i in range(table.num_rows)]
            )
            docs += [{"id": str(i), "text": t} for i, t in zip(ids, table.column(text_column).to_pylist()) if t]
    if not docs:
        raise InputError(f"positive corpus {paths}: no documents")
    return docs


def mix(
    base: list[str],
    positive: list[str],
    output: str,
    target_share: float,
    final_slice: float = 1.0,
    seed: int = 0,
    text_column: str = "text",
    id_column: str = "id",
) -> dict[str, Any]:
    """Write ``output/mixed/*.parquet`` and ``output/mix.json``; return the mix record.

    Raises:
        ConfigError: for a target share outside (0, 1) or a final slice outside (0, 1].
    """
    if not 0 < target_share < 1:
        raise ConfigError(f"option --target-share: expected a number in (0, 1), got {target_share}")
    if not 0 < final_slice <= 1:
        raise ConfigError(f"option --final-slice: expected a number in (0, 1], got {final_slice}")
    shards = io.discover_shards(base)
    tables = [io.read_table(s.url) for s in shards]
    for shard, table in zip(shards, tables):
        if text_column not in table.column_names:
            raise InputError(f"shard {shard.url}: no text column {text_column!r}; it has {table.column_names}")
    base_words = int(sum(_words(t.column(text_column)).sum() for t in tables))
    need = target_share / (1 - target_share) * base_words
    docs = sorted(read_positive(positive, text_column, id_column), key=lambda d: _key(seed, d["id"]))
    picked, got, k = [], 0, 0
    while got < need:
        doc = docs[k % len(docs)]
        picked.append({"id": f"{doc['id']}#mix{k // len(docs)}" if k >= len(docs) else doc["id"], "text": doc["text"]})
        got += len(doc["text"].split())
        k += 1
    first = len(shards) - max(1, round(final_slice * len(shards)))
    targets = list(range(first, len(shards)))
    per_shard: dict[int, list[dict[str, str]]] = {i: [] for i in targets}
    for j, doc in enumerate(picked):
        per_shard[targets[j % len(targets)]].append(doc)
    record: dict[str, Any] = {
        "base_words": base_words,
        "positive_words": got,
        "positive_documents": len(picked),
        "distinct_positive_documents": min(len(docs), len(picked)),
        "target_share": target_share,
        "achieved_share": round(got / (got + base_words), 6) if got + base_words else 0.0,
        "final_slice": final_slice,
        "seed": seed,
        "base": base,
        "positive": positive,
        "shards": [],
    }
    for i, (shard, table) in enumerate(zip(shards, tables)):
        table = table.append_column("mix_source", pa.array(["base"] * table.num_rows, pa.string()))
        extra = per_shard.get(i, [])
        if extra:
            cols = {name: pa.nulls(len(extra), table.schema.field(name).type) for name in table.column_names}
            cols[text_column] = pa.array([d["text"] for d in extra], table.schema.field(text_column).type)
            if id_column in cols:
                cols[id_column] = pc.cast(pa.array([d["id"] for d in extra]), table.schema.field(id_column).type)
            cols["mix_source"] = pa.array(["positive"] * len(extra), pa.string())
            table = pa.concat_tables([table, pa.table(cols, schema=table.schema)])
            # Interleave: order rows by a hash of (seed, row text), stable for reruns.
            order = np.argsort(
                np.array([_key(seed, f"{i}:{j}:{t}") for j, t in enumerate(table.column(text_column).to_pylist())]),
                kind="stable",
            )
            table = table.take(pa.array(order))
        io.atomic_write_table(io.join(output, "mixed", f"{shard.key}.parquet"), table)
        record["shards"].append({"shard": shard.url, "positive_documents": len(extra), "rows": table.num_rows})
    io.atomic_write_json(io.join(output, "mix.json"), record)
    return record
