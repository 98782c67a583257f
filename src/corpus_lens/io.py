"""Shard discovery, streaming reads and atomic writes, for local paths and any fsspec URL."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from corpus_lens.errors import InputError

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Shard:
    """One input Parquet file: its URL, size, and the safe name its outputs take."""

    url: str
    size: int
    key: str  # e.g. "00001-web-00001": safe as a file name, unique within a scan


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise InputError(f"input {url}: cannot open this kind of URL: {exc}") from exc


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    return fs.unstrip_protocol(path) if "://" in like else path


def _safe_stem(url: str) -> str:
    stem = url.rstrip("/").rsplit("/", 1)[-1]
    stem = stem.removesuffix(".parquet")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "shard"
    return stem[:80]


def discover_shards(inputs: tuple[str, ...] | list[str]) -> list[Shard]:
    """Expand paths, directories and globs into a sorted list of Parquet shards.

    Raises:
        InputError: when an input does not exist or holds no ``*.parquet`` file.
    """
    if not inputs:
        raise InputError("no input given: pass one or more Parquet paths, directories or globs")
    found: dict[str, int] = {}
    for item in inputs:
        fs, path = _fs(item)
        if _GLOB_CHARS.search(path):
            matches = [p for p in sorted(fs.glob(path)) if fs.isfile(p)]
            if not matches:
                raise InputError(f"input {item}: the glob matches no file")
        elif fs.isdir(path):
            matches = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
            if not matches:
                raise InputError(f"input {item}: the directory holds no *.parquet file")
        elif fs.isfile(path):
            matches = [path]
        else:
            raise InputError(f"input {item}: no such file or directory")
        for p in matches:
            try:
                size = int(fs.size(p) or 0)
            except OSError:
                size = 0
            found[_unstrip(fs, p, item)] = size
    return [
        Shard(url=url, size=size, key=f"{i:05d}-{_safe_stem(url)}")
        for i, (url, size) in enumerate(sorted(found.items()))
    ]


def open_parquet(url: str) -> pq.ParquetFile:
    """Open a shard for streaming, turning every failure into an InputError naming it."""
    fs, path = _fs(url)
    try:
        handle = fs.open(path, "rb")
        return pq.ParquetFile(handle)
    except PermissionError as exc:
        raise InputError(f"shard {url}: cannot read the file: permission denied") from exc
    except FileNotFoundError as exc:
        raise InputError(f"shard {url}: the file disappeared before it was read") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"shard {url}: not a readable Parquet file ({exc})") from exc


def iter_batches(
    pf: pq.ParquetFile, url: str, columns: list[str] | None, batch_rows: int, row_groups: list[int] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a shard (or some of its row groups) in record batches; a decoding failure names
    the shard."""
    try:
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=row_groups)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"shard {url}: the file is corrupt or truncated ({exc})") from exc


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL."""
    return "/".join([base.rstrip("/"), *parts])


def atomic_write_bytes(url: str | Path, data: bytes) -> None:
    """Write bytes so that readers see the old file or the whole new one, never a part."""
    url = str(url)
    fs, path = _fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        # Object stores publish an object only when its upload completes, which is atomic.
        with fs.open(path, "wb") as f:
            f.write(data)


def atomic_write_text(url: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the whole new one, never a part."""
    atomic_write_bytes(url, text.encode("utf-8"))


def atomic_write_generated(path: Path, text: str, marker: str) -> None:
    """Write a generated document atomically, keeping what the file already holds below ``marker``
    (sections written by hand, which a rerun must not drop)."""
    if path.is_file() and marker in (old := path.read_text(encoding="utf-8")):
        text += "\n" + marker + old.split(marker, 1)[1]
    atomic_write_text(path, text)


def atomic_write_json(url: str | Path, data: Any) -> None:
    """Write JSON atomically, with sorted keys so reruns give identical bytes."""
    atomic_write_text(url, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_write_table(url: str, table: pa.Table) -> None:
    """Write a Parquet file atomically (zstd)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(url, sink.getvalue().to_pybytes())


def read_json(url: str) -> Any:
    """Read a JSON file from a local path or URL; None if it does not exist."""
    fs, path = _fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def exists(url: str) -> bool:
    """Whether a file or folder exists at a local path or URL."""
    fs, path = _fs(url)
    return bool(fs.exists(path))


def read_table(url: str) -> pa.Table:
    """Read a whole Parquet file (for the small outputs of a scan)."""
    fs, path = _fs(url)
    with fs.open(path, "rb") as f:
        return pq.read_table(f)


def list_files(url: str, suffix: str) -> list[str]:
    """Sorted files with the given suffix directly in a folder (empty if none)."""
    fs, path = _fs(url)
    if not fs.exists(path):
        return []
    return sorted(_unstrip(fs, p, url) for p in fs.ls(path, detail=False) if p.endswith(suffix))


def remove_tree(url: str) -> None:
    """Remove a folder if it exists."""
    fs, path = _fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def read_text(url: str) -> str:
    """Read a UTF-8 text file from a local path or URL."""
    fs, path = _fs(url)
    with fs.open(path, "rb") as f:
        return f.read().decode("utf-8")


def parse_jsonl(
    lines: Iterable[str], where: str, text_column: str, error: type[Exception] = InputError
) -> list[tuple[int, dict[str, Any]]]:
    """JSON-lines records with a string ``text_column``, as (line number, record); blank lines skipped.

    Raises:
        ``error``: naming ``where`` and the line, for a line that is not JSON or lacks the text.
    """
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get(text_column), str):
            raise error(f"{where}:{lineno}: expected an object with a string {text_column!r}")
        records.append((lineno, rec))
    return records
