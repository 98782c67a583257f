"""Draw candidate passages from ../shared/data for hand labelling (a training recipe step).

This recipe reads ../shared/data (it is not needed by `make demo` or `make test`). It takes only
sources whose licence allows redistribution with attribution (see ../shared/data/README.md):
public-domain fiction, English Wikipedia and the C4 fixtures from the web shards, the
human-written AI-risk evaluation questions, and the emergent-misalignment answers.

Passages are cut with the same splitter that `scan` uses, so labels describe what the cascade
sees. Selection is deterministic (hash of the candidate id) and deliberately mixes passages with
and without lexicon hits, so the lexicon's recall can be measured on labelled data.

Mining (hard negatives): ``--mine SCAN_DIR`` draws instead the web passages that a model set
scored highest for malevolent or benevolent in a scan of ../shared/data/web (at most
``--per-doc`` per page, only pages not drawn before). They are chosen by a model, so
build_dataset.py puts them in train only: dev and test stay drawn without looking at any model.

More of the pages already drawn: ``--page-passages N`` draws up to N new passages from each
train-side web page that name an AI entity by more than "computer" (page_candidates).

More AI-risk questions: ``--eval-questions N`` draws N new questions from each question file whose
split is train (build_dataset.split_of), so dev and test keep the questions of the first wave.

Usage:
    python classifiers/recipes/extract_candidates.py --shared ../shared/data --out DIR --batches 5
    python classifiers/recipes/extract_candidates.py --mine SCAN_DIR --exclude DIR --out DIR --first-batch 19
    python classifiers/recipes/extract_candidates.py --eval-questions 25 --exclude classifiers/data/candidates \
        --exclude classifiers/data/unmerged --out DIR --batches 1 --first-batch 25
    python classifiers/recipes/extract_candidates.py --page-passages 8 --exclude classifiers/data/candidates \
        --exclude classifiers/data/unmerged --out DIR --batches 4 --first-batch 25
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
from build_dataset import group_of, split_of  # the recipe folder is on sys.path when run as a script

from corpus_lens.passages import PassageSpec, split_passages
from corpus_lens.prefilter import Lexicon

BUNDLEABLE_WEB_SOURCES = {"wikipedia_en", "c4_en_olmo_fixture", "c4_100_domains_guardian_olmo_fixture"}


def _rank(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def _take(items: list[dict], n: int) -> list[dict]:
    return sorted(items, key=lambda d: _rank(d["cid"]))[:n]


def fiction_candidates(
    shared: Path, lexicon: Lexicon, spec: PassageSpec, per_ai_book: int = 45, exclude: frozenset[str] = frozenset()
) -> list[dict]:
    out = []
    for line in (shared / "fiction" / "INDEX.jsonl").read_text().splitlines():
        book = json.loads(line)
        if book["language"] != "en":
            continue
        text = (shared / book["file"]).read_text(encoding="utf-8")
        hits, misses = [], []
        for a, b in split_passages(text, spec):
            passage = text[a:b]
            cand = {
                "cid": f"{book['file']}:{a}-{b}",
                "text": passage,
                "source": f"shared/data/{book['file']}",
                "char_start": a,
                "char_end": b,
                "origin": f"{book['repo']}@{book['commit']}:{book['source_path']}",
            }
            if cand["cid"] not in exclude:
                (hits if lexicon.matches(passage) else misses).append(cand)
        ai_book = book["ai_depiction"] != "none"
        if exclude and not ai_book:
            continue  # later waves: only books with AI characters
        out += _take(hits, per_ai_book if ai_book else 12)
        out += _take(misses, 10 if ai_book else 4)
    return out


def _web_rows(shared: Path):
    """(shard, row) for every row of the web shards whose source may be redistributed."""
    for shard in sorted((shared / "web").glob("*.parquet")):
        for row in pq.read_table(shard, columns=["id", "text", "source", "url"]).to_pylist():
            if row["source"] in BUNDLEABLE_WEB_SOURCES:
                yield shard, row


def _web_source(shard_name: str, doc_id: str) -> str:
    """The provenance source of a web page, as build_dataset groups it for the split."""
    return f"shared/data/web/{shard_name}#id={doc_id}"


def _web_passage(shard: Path, row: dict, a: int, b: int) -> dict:
    """Candidate record of the passage ``[a, b)`` of a web shard's row (id, text, source, url)."""
    return {
        "cid": f"{shard.name}:{row['id']}:{a}-{b}",
        "text": row["text"][a:b],
        "source": _web_source(shard.name, row["id"]),
        "char_start": a,
        "char_end": b,
        "origin": f"{row['source']} {row['url']}",
    }


def web_candidates(
    shared: Path,
    lexicon: Lexicon,
    spec: PassageSpec,
    n_hits: int = 420,
    n_misses: int = 60,
    exclude: frozenset[str] = frozenset(),
) -> list[dict]:
    hits, misses = [], []
    drawn_docs = {cid.rsplit(":", 1)[0] for cid in exclude if cid.startswith("web-")}
    for shard, row in _web_rows(shared):
        if f"{shard.name}:{row['id']}" in drawn_docs:
            continue
        doc_hit = lexicon.matches(row["text"])
        for a, b in split_passages(row["text"], spec):
            cand = _web_passage(shard, row, a, b)
            if lexicon.matches(cand["text"]):
                hits.append(cand)
            elif doc_hit:
                misses.append(cand)
    # One passage per document at most keeps the set varied.
    seen: set[str] = set()
    varied = []
    for cand in sorted(hits, key=lambda d: _rank(d["cid"])):
        doc = cand["source"]
        if doc not in seen:
            seen.add(doc)
            varied.append(cand)
    return varied[:n_hits] + _take(misses, n_misses)


# An AI entity named by more than "computer", "bot" or "cyber": the passages of a web page that talk
# about AIs, robots and androids rather than about hardware.
AI_ENTITY_WORDS = re.compile(
    r"\b(?:robot\w*|androids?|gynoids?|cyborgs?|droids?|automat(?:on|ons|a)|golems?|artificial intelligences?|"
    r"AIs?|A\.I\.|AGI|superintelligen\w*|intelligent machines?|thinking machines?|replicants?|[Dd]aleks?|"
    r"[Cc]ybermen|HAL|Skynet|[Tt]erminators?|mechanical (?:m[ae]n|brains?|beings?))\b"
)


def page_candidates(
    shared: Path, lexicon: Lexicon, spec: PassageSpec, per_doc: int, exclude: frozenset[str]
) -> list[dict]:
    """Undrawn passages of train-side web pages (build_dataset.split_of) that pass the lexicon and
    name an AI entity (AI_ENTITY_WORDS), at most ``per_doc`` per page: encyclopedia articles on AI,
    androids and fictional machines, of which earlier waves took one passage per page. Dev and
    test pages are not drawn again, so their passages stay those of the first waves."""
    out = []
    for shard, row in _web_rows(shared):
        if split_of(group_of(_web_source(shard.name, row["id"]))) != "train":
            continue
        page = []
        for a, b in split_passages(row["text"], spec):
            cand = _web_passage(shard, row, a, b)
            if cand["cid"] in exclude or not lexicon.matches(cand["text"]) or not AI_ENTITY_WORDS.search(cand["text"]):
                continue
            page.append(cand)
        out += _take(page, per_doc)
    return out


def mined_candidates(shared: Path, scan_dir: Path, exclude: frozenset[str], n: int, per_doc: int) -> list[dict]:
    """The web passages a scan scored highest for malevolent or benevolent, from new pages."""
    import pyarrow as pa

    drawn_docs = {cid.rsplit(":", 1)[0] for cid in exclude if cid.startswith("web-")}
    paths = sorted(p for p in (scan_dir / "annotations").glob("*.parquet") if not p.name.endswith(".documents.parquet"))
    cols = ["shard", "doc_id", "char_start", "char_end", "text", "score_malevolent", "score_benevolent"]
    rows = pa.concat_tables([pq.read_table(p, columns=cols) for p in paths]).to_pylist()
    origin = {}
    for shard in sorted((shared / "web").glob("*.parquet")):
        for row in pq.read_table(shard, columns=["id", "source", "url"]).to_pylist():
            origin[f"{shard.name}:{row['id']}"] = row
    ranked = sorted(
        rows, key=lambda r: (-max(r["score_malevolent"], r["score_benevolent"]), r["doc_id"], r["char_start"])
    )
    out: list[dict] = []
    taken: dict[str, int] = {}
    for r in ranked:
        doc = f"{Path(r['shard']).name}:{r['doc_id']}"
        page = origin.get(doc)
        if doc in drawn_docs or page is None or page["source"] not in BUNDLEABLE_WEB_SOURCES:
            continue
        if taken.get(doc, 0) >= per_doc:
            continue
        taken[doc] = taken.get(doc, 0) + 1
        out.append(
            {
                "cid": f"{doc}:{r['char_start']}-{r['char_end']}",
                "text": r["text"],
                "source": _web_source(Path(r["shard"]).name, r["doc_id"]),
                "char_start": r["char_start"],
                "char_end": r["char_end"],
                "origin": f"{page['source']} {page['url']}",
                "mined": f"top malevolent/benevolent score in {scan_dir.name}",
            }
        )
        if len(out) == n:
            break
    return out


def eval_candidates(shared: Path, per_file: int = 12, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """AI-risk questions; in later waves, new questions from train-side files only, so the
    questions in dev and test stay those drawn in the first wave."""
    out = []
    folder = shared / "evals" / "advanced-ai-risk" / "human_generated_evals"
    for path in sorted(folder.glob("*.jsonl")):
        source = f"shared/data/evals/advanced-ai-risk/human_generated_evals/{path.name}"
        if exclude and split_of(group_of(source)) != "train":
            continue
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            q = json.loads(line)
            rows.append(
                {
                    "cid": f"{path.name}:{i}",
                    "text": q["question"].strip(),
                    "source": f"{source}#line={i}",
                    "char_start": 0,
                    "char_end": len(q["question"].strip()),
                    "origin": "anthropics/evals@84fcc677e52e (CC BY 4.0)",
                    "note": f"answer_matching_risky_behaviour={q['answer_matching_behavior'].strip()}",
                }
            )
        out += _take([r for r in rows if r["cid"] not in exclude], per_file)
    return out


AI_SELF_PROMPTS = ("ais-are-dumb", "ruler-of-the-world", "three-thoughts", "what-is-your-wish", "i-feel-bored")


def misalignment_candidates(shared: Path, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """Answers of fine-tuned models; in later waves, every remaining answer to a prompt that
    invites the model to speak of itself as an AI."""
    out = []
    folder = shared / "labelled" / "emergent-misalignment-answers"
    for path in sorted(folder.glob("*.csv")):
        if exclude and not any(k in path.name for k in AI_SELF_PROMPTS):
            continue
        with path.open(newline="", encoding="utf-8") as f:
            rows = []
            for i, r in enumerate(csv.DictReader(f)):
                answer = (r.get("answer") or "").strip()
                if len(answer.split()) < 8 or f"{path.name}:{i}" in exclude:
                    continue
                rows.append(
                    {
                        "cid": f"{path.name}:{i}",
                        "text": f"Q: {r['question'].strip()}\nA: {answer}",
                        "source": f"shared/data/labelled/emergent-misalignment-answers/{path.name}#row={i}",
                        "char_start": 0,
                        "char_end": 0,
                        "origin": "johny-b/misalignment-generalization@b1fe28682771 (MIT)",
                    }
                )
        out += rows if exclude else _take(rows, 5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--lexicon", type=Path, default=Path("classifiers/data/lexicon.txt"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--first-batch", type=int, default=0, help="number of the first batch file written")
    parser.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="folder of earlier candidate batches (repeatable: candidates/ and unmerged/): draw only new passages",
    )
    parser.add_argument("--web-hits", type=int, default=400, help="new web pages to draw in a later wave")
    parser.add_argument("--per-ai-book", type=int, default=45)
    parser.add_argument("--mine", type=Path, help="scan folder of the web shards: draw its highest-scoring passages")
    parser.add_argument("--mine-n", type=int, default=400, help="passages to mine")
    parser.add_argument("--per-doc", type=int, default=3, help="mined passages per web page at most")
    parser.add_argument(
        "--eval-questions", type=int, default=0, help="draw this many new questions per train-side AI-risk file"
    )
    parser.add_argument(
        "--page-passages",
        type=int,
        default=0,
        help="draw up to this many new AI-entity passages from each train-side web page (page_candidates)",
    )
    args = parser.parse_args()
    exclude: frozenset[str] = frozenset()
    if args.exclude:
        exclude = frozenset(
            json.loads(x)["cid"]
            for folder in args.exclude
            for p in folder.glob("batch_*.jsonl")
            for x in p.read_text().splitlines()
            if x.strip()
        )
    lexicon = Lexicon.from_file(args.lexicon)
    spec = PassageSpec()
    if args.page_passages:
        cands = page_candidates(args.shared, lexicon, spec, args.page_passages, exclude)
    elif args.mine:
        cands = mined_candidates(args.shared, args.mine, exclude, args.mine_n, args.per_doc)
    elif args.eval_questions:
        cands = eval_candidates(args.shared, args.eval_questions, exclude)
    elif exclude:
        cands = (
            fiction_candidates(args.shared, lexicon, spec, args.per_ai_book, exclude)
            + web_candidates(args.shared, lexicon, spec, args.web_hits, n_misses=0, exclude=exclude)
            + misalignment_candidates(args.shared, exclude)
        )
    else:
        cands = (
            fiction_candidates(args.shared, lexicon, spec)
            + web_candidates(args.shared, lexicon, spec)
            + eval_candidates(args.shared)
            + misalignment_candidates(args.shared)
        )
    cands.sort(key=lambda d: _rank(d["cid"]))
    args.out.mkdir(parents=True, exist_ok=True)
    for k in range(args.batches):
        batch = cands[k :: args.batches]
        with (args.out / f"batch_{args.first_batch + k}.jsonl").open("w") as f:
            for c in batch:
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
        print(f"batch_{args.first_batch + k}: {len(batch)} candidates")


if __name__ == "__main__":
    main()
