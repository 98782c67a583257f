"""Shared fixtures: tiny real data sliced from the bundled demo corpus."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "corpus"


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    """All demo documents (id, text, url, source), in shard order."""
    rows: list[dict] = []
    for path in sorted(DEMO.glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def write_shard(path: Path, rows: list[dict], schema: pa.Schema | None = None, row_group_size: int = 16) -> Path:
    """Write rows as a Parquet shard (helper for tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, demo_rows: list[dict]) -> Path:
    """Two small shards of real demo text: AI fiction, hard negatives and Wikipedia."""
    folder = tmp_path_factory.mktemp("corpus")
    robots = [r for r in demo_rows if r["source"] == "gutenberg_public_domain"]
    other = [r for r in demo_rows if r["source"] != "gutenberg_public_domain"]
    picked = [{**r, "text": r["text"][:6000]} for r in robots[:6] + other[:30]]
    write_shard(folder / "part-0.parquet", picked[0::2])
    write_shard(folder / "part-1.parquet", picked[1::2])
    return folder
