"""Assemble classifiers/data/passages.jsonl from labelled candidates and written passages.

Inputs (all in classifiers/data/): candidates/batch_K.jsonl (real passages drawn by
extract_candidates.py), labels/batch_K.labels.jsonl (one hand label per candidate, same order),
written/*.jsonl (passages written for this project). Each passage gets a fixed split by a hash
of its source document, so no book, page, question file or answer set is on two sides. Mined
candidates (chosen by a model's scores, extract_candidates.py --mine) go to train only, so dev and
test hold only passages drawn without a model; their pages are new, so no page is on two sides.
A written passage may carry ``"split": "train"`` (waves written after the test split was fixed go
to train only, so test scores stay comparable and are not raised by more of our own writing).

labels/adjudicated.jsonl, when present, overrides first-pass labels by id: each line is an
adjudicator's decision (depiction, mode, tags, the codebook rule, a note) on a passage where a
second, blind annotation disagreed (see agreement.py). The passage keeps the first label in
``adjudicated.from``.

Usage: python classifiers/recipes/build_dataset.py [--data classifiers/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from corpus_lens.io import atomic_write_text

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


def first_pass(data: Path) -> list[dict]:
    """Every labelled passage with its first annotator's label and its split group."""
    out = []
    for cand_path in sorted((data / "candidates").glob("batch_*.jsonl")):
        label_path = data / "labels" / cand_path.name.replace(".jsonl", ".labels.jsonl")
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
                    "group": "train-only" if "mined" in c else group_of(c["source"]),
                }
            )
            if "mined" in c:
                out[-1]["provenance"]["selected_by"] = c["mined"]
    for path in sorted((data / "written").glob("*.jsonl")):
        for lineno, x in enumerate(path.read_text().splitlines(), 1):
            if not x.strip():
                continue
            rec = json.loads(x)
            if rec.get("split", "train") != "train":
                raise SystemExit(
                    f"{path}:{lineno}: a written passage may only be pinned to train, not {rec['split']!r}"
                )
            out.append(
                {
                    "id": rec["wid"],
                    "text": rec["text"],
                    "depiction": rec["depiction"],
                    "mode": rec["mode"],
                    "tags": rec.get("tags", []) if rec["depiction"] == "malevolent" else [],
                    "provenance": {"source": "written", "file": f"written/{path.name}"},
                    "labeller_note": "",
                    "group": "train-only" if "split" in rec else f"written:{rec['wid']}",
                }
            )
    seen: set[str] = set()
    unique = []
    for rec in sorted(out, key=lambda r: r["id"]):
        if rec["id"] in seen or not rec["text"].strip():
            continue
        seen.add(rec["id"])
        unique.append(rec)
    return unique


def adjudicate(recs: list[dict], path: Path) -> int:
    """Apply the adjudicator's decisions in ``path`` (if it exists); return how many labels changed."""
    if not path.is_file():
        return 0
    by_id = {r["id"]: r for r in recs}
    changed = 0
    for lineno, x in enumerate(path.read_text().splitlines(), 1):
        if not x.strip():
            continue
        d = json.loads(x)
        rec = by_id.get(d["id"])
        if rec is None:
            raise SystemExit(f"{path}:{lineno}: no passage with id {d['id']!r}")
        new = (d["depiction"], d["mode"], sorted(d["tags"]) if d["depiction"] == "malevolent" else [])
        old = (rec["depiction"], rec["mode"], sorted(rec["tags"]))
        if new == old:
            continue
        rec["adjudicated"] = {
            "from": {"depiction": old[0], "mode": old[1], "tags": old[2]},
            "rule": d["rule"],
            "note": d["note"],
        }
        rec["depiction"], rec["mode"], rec["tags"] = new
        changed += 1
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("classifiers/data"))
    args = parser.parse_args()
    recs = first_pass(args.data)
    changed = adjudicate(recs, args.data / "labels" / "adjudicated.jsonl")
    for rec in recs:
        group = rec.pop("group")
        rec["split"] = "train" if group == "train-only" else split_of(group)
    text = "".join(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n" for rec in recs)
    atomic_write_text(args.data / "passages.jsonl", text)
    counts: dict[str, int] = {"adjudicated": changed}
    for rec in recs:
        real = "written" if rec["provenance"]["source"] == "written" else "real"
        for key in (rec["depiction"], rec["split"], real, "total"):
            counts[key] = counts.get(key, 0) + 1
    print(counts)


if __name__ == "__main__":
    main()
