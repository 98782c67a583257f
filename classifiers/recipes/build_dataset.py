"""Assemble classifiers/data/passages.jsonl from labelled candidates and written passages.

Inputs (all in classifiers/data/): candidates/batch_K.jsonl (real passages drawn by
extract_candidates.py), labels/batch_K.labels.jsonl (one hand label per candidate, same order),
written/*.jsonl (passages written for this project). Each passage gets a fixed split by a hash
of its source document, so no book, page, question file or answer set is on two sides.

Usage: python classifiers/recipes/build_dataset.py [--data classifiers/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

SPLITS = (("train", 0.70), ("dev", 0.15), ("test", 0.15))


def split_of(group: str) -> str:
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if u < edge:
            return name
    return SPLITS[-1][0]


def group_of(source: str) -> str:
    """The source document: a book, a web page, an eval file, an answer file."""
    if "#id=" in source:  # a web page: one document per id
        return source
    return source.split("#", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("classifiers/data"))
    args = parser.parse_args()
    out = []
    for cand_path in sorted((args.data / "candidates").glob("batch_*.jsonl")):
        label_path = args.data / "labels" / cand_path.name.replace(".jsonl", ".labels.jsonl")
        cands = [json.loads(x) for x in cand_path.read_text().splitlines() if x.strip()]
        labels = {}
        for x in label_path.read_text().splitlines():
            if x.strip():
                rec = json.loads(x)
                labels[rec["cid"]] = rec
        missing = [c["cid"] for c in cands if c["cid"] not in labels]
        if missing:
            raise SystemExit(f"{label_path}: {len(missing)} candidates have no label, e.g. {missing[:3]}")
        for c in cands:
            lab = labels[c["cid"]]
            out.append(
                {
                    "id": c["cid"],
                    "text": c["text"],
                    "depiction": lab["depiction"],
                    "mode": lab["mode"],
                    "tags": lab["tags"] if lab["depiction"] == "malevolent" else [],
                    "provenance": {
                        "source": c["source"],
                        "char_start": c["char_start"],
                        "char_end": c["char_end"],
                        "origin": c["origin"],
                    },
                    "labeller_note": lab.get("note", ""),
                    "group": group_of(c["source"]),
                }
            )
    for path in sorted((args.data / "written").glob("*.jsonl")):
        for x in path.read_text().splitlines():
            if not x.strip():
                continue
            rec = json.loads(x)
            out.append(
                {
                    "id": rec["wid"],
                    "text": rec["text"],
                    "depiction": rec["depiction"],
                    "mode": rec["mode"],
                    "tags": rec.get("tags", []) if rec["depiction"] == "malevolent" else [],
                    "provenance": {"source": "written", "file": f"written/{path.name}"},
                    "labeller_note": "",
                    "group": f"written:{rec['wid']}",
                }
            )
    seen = set()
    with (args.data / "passages.jsonl").open("w", encoding="utf-8") as f:
        for rec in sorted(out, key=lambda r: r["id"]):
            if rec["id"] in seen or not rec["text"].strip():
                continue
            seen.add(rec["id"])
            rec["split"] = split_of(rec.pop("group"))
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
    counts: dict[str, dict[str, int]] = {}
    for rec in (json.loads(x) for x in (args.data / "passages.jsonl").read_text().splitlines()):
        real = "written" if rec["provenance"]["source"] == "written" else "real"
        for key in (rec["depiction"], rec["split"], real, "total"):
            counts.setdefault(key, {"n": 0})["n"] += 1
    print({k: v["n"] for k, v in counts.items()})


if __name__ == "__main__":
    main()
