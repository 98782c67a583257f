"""Build the bundled demo corpus from ../shared/data (run once by maintainers; its output is committed).

Only sources whose licence allows redistribution are taken (see demo/ATTRIBUTION.md):
English Wikipedia articles (CC BY-SA 3.0), the C4 fixtures (ODC-BY) and public-domain
fiction from Project Gutenberg, cut into chapter-sized documents. Output: demo/corpus/
demo-0000{0,1,2}.parquet with columns id, text, url, source.

Usage: python demo/build_demo_corpus.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WEB_SOURCES = {"wikipedia_en": 260, "c4_en_olmo_fixture": 20, "c4_100_domains_guardian_olmo_fixture": 20}
BOOKS = [
    "r-u-r-rossum-s-universal-robots-a-fantastic-melodrama-in-thr-pg59112.txt",
    "robots-of-the-world-arise-pg31611.txt",
    "the-gun-pg29132.txt",
    "tik-tok-of-oz-pg956.txt",
    "moonlight-and-robots-pg66571.txt",
    "the-miserly-robot-pg65128.txt",
    "the-variable-man-pg32154.txt",
    "the-knowledge-machine-pg69665.txt",
    "the-wind-in-the-willows-pg289.txt",
]
CHUNK_CHARS = 12_000


def _rank(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def chunks(text: str) -> list[str]:
    """Cut a book at paragraph breaks into documents of about CHUNK_CHARS characters."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n\n", start + CHUNK_CHARS)
        end = len(text) if end < 0 else end
        out.append(text[start:end].strip())
        start = end
    return [c for c in out if c]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "corpus")
    args = parser.parse_args()
    rows = []
    web = pq.read_table(sorted((args.shared / "web").glob("*.parquet"))[0].parent, columns=["id", "text", "url", "source"]).to_pylist()
    for source, n in WEB_SOURCES.items():
        picked = sorted((r for r in web if r["source"] == source), key=lambda r: _rank(r["id"]))[:n]
        rows += [r for r in picked if len(r["text"]) < 60_000]
    index = {json.loads(x)["file"]: json.loads(x) for x in (args.shared / "fiction" / "INDEX.jsonl").read_text().splitlines()}
    for name in BOOKS:
        meta = index[f"fiction/{name}"]
        text = (args.shared / "fiction" / name).read_text(encoding="utf-8")
        for k, chunk in enumerate(chunks(text)):
            rows.append({
                "id": f"gutenberg-{meta['gutenberg_id']}-{k:03d}",
                "text": chunk,
                "url": f"https://www.gutenberg.org/ebooks/{meta['gutenberg_id']}",
                "source": "gutenberg_public_domain",
            })
    rows.sort(key=lambda r: _rank(r["id"]))
    args.out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("url", pa.string()), ("source", pa.string())])
    for k in range(3):
        part = rows[k::3]
        pq.write_table(pa.Table.from_pylist(part, schema=schema), args.out / f"demo-{k:05d}.parquet", compression="zstd", row_group_size=64)
        print(f"demo-{k:05d}.parquet: {len(part)} documents, {sum(len(r['text']) for r in part) / 1e6:.2f} M chars")


if __name__ == "__main__":
    main()
