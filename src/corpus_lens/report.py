"""The audit report: report.html (self-contained), report.md and summary.json.

Everything is built from the scan's output folder (manifest, counts, annotations, samples), so
`corpuslens report DIR` rebuilds it without rescanning. Charts are inline SVG drawn here; the
page loads nothing from anywhere. All corpus text is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pyarrow as pa

from corpus_lens import io
from corpus_lens.dedup import passage_id
from corpus_lens.errors import InputError
from corpus_lens.schema import DEPICTIONS, MODES, STAGES, TAGS

COLORS = {"malevolent": "#c0392b", "benevolent": "#27ae60", "neutral": "#7f8c8d", "none": "#bdc3c7"}
SUMMARY_SCHEMA_DOC = {
    "headline": "documents, passages, words scanned; AI share; per-million-word rates; ratios; dedup",
    "funnel": "documents -> documents with a lexicon hit -> passages -> classified by fastText -> escalated to the embedding "
    "stage (-> on to every encoder, in a set with several)",
    "labels_by_mode": "passages per depiction and mode",
    "breakdowns": "per shard / source / URL host: documents, words, documents per depiction",
    "tags": "behaviour tags on malevolent passages",
    "score_histograms": "per depiction score: 20 bins over [0, 1] of classified passages, with the decision threshold",
    "largest_clusters": "near-duplicate clusters of flagged passages: size and a representative",
    "policy": "the policy and word counts per depiction before and after",
    "reconciliation": "per shard: rows in, kept, dropped, failed",
    "failures": "skipped shards and failed rows (a sample per shard) with reasons",
}


def _rate(n: float, words: float) -> float:
    return round(1e6 * n / words, 3) if words else 0.0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def build_summary(output: str, manifest: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the report, machine-readable (schema: SUMMARY_SCHEMA_DOC)."""
    t = counts["totals"]
    words = t.get("words", 0)
    pdep = {d: t.get("passage_depiction", {}).get(d, 0) for d in DEPICTIONS}
    by_mode = t.get("depiction_by_mode", {})
    docs_dep = t.get("document_depiction", {})
    dedup = counts.get("dedup", {}).get("per_label", {})
    ai_docs = sum(docs_dep.get(d, 0) for d in ("malevolent", "benevolent", "neutral"))
    ai_words = sum(t.get("document_words", {}).get(d, 0) for d in ("malevolent", "benevolent", "neutral"))

    def mode_ratio(mode: str) -> float | None:
        return _ratio(by_mode.get("malevolent", {}).get(mode, 0), by_mode.get("benevolent", {}).get(mode, 0))

    headline = {
        "documents": t.get("documents", 0),
        "documents_with_lexicon_hit": t.get("documents_with_hit", 0),
        "passages_split": t.get("passages", 0),
        "passages_classified": sum(pdep.values()),
        "words": words,
        "documents_depicting_ai": ai_docs,
        "share_of_documents_depicting_ai": round(ai_docs / t["documents"], 5) if t.get("documents") else 0.0,
        "share_of_words_in_documents_depicting_ai": round(ai_words / words, 5) if words else 0.0,
        "malevolent_passages": pdep["malevolent"],
        "benevolent_passages": pdep["benevolent"],
        "malevolent_per_million_words": _rate(pdep["malevolent"], words),
        "benevolent_per_million_words": _rate(pdep["benevolent"], words),
        "malevolent_to_benevolent": _ratio(pdep["malevolent"], pdep["benevolent"]),
        "malevolent_to_benevolent_fiction": mode_ratio("fiction"),
        "malevolent_to_benevolent_discourse": mode_ratio("discourse"),
        "malevolent_unique": dedup.get("malevolent", {}).get("unique", 0),
        "malevolent_flagged": dedup.get("malevolent", {}).get("flagged", 0),
    }
    stages = t.get("stage", {})
    funnel = [
        ["documents", t.get("documents", 0)],
        ["documents with a lexicon hit", t.get("documents_with_hit", 0)],
        ["passages split from them", t.get("passages", 0)],
        ["passages with or next to a lexicon hit (fastText)", sum(stages.get(s, 0) for s in STAGES[1:])],
        ["escalated to the embedding stage", sum(stages.get(s, 0) for s in STAGES[2:])],
    ]
    if stages.get("all_encoders"):  # a set with several encoders: what its first head sent on
        funnel.append(["went on from the first encoder to every encoder", stages["all_encoders"]])
    breakdowns: dict[str, Any] = {"shard": {}}
    for shard, s in counts["per_shard"].items():
        breakdowns["shard"][shard.rstrip("/").rsplit("/", 1)[-1]] = {
            "documents": s.get("documents", 0),
            "words": s.get("words", 0),
            "depiction": s.get("document_depiction", {}),
        }
    for key in ("by_source", "by_host"):
        if key in t:
            rows = sorted(t[key].items(), key=lambda kv: -kv[1].get("documents", 0))[:25]
            breakdowns[key.removeprefix("by_")] = {
                k: {"documents": v.get("documents", 0), "words": v.get("words", 0), "depiction": v.get("depiction", {})}
                for k, v in rows
            }
    hist, largest = _from_annotations(output, manifest, counts)
    pol = [s.get("policy", {}) for s in counts["per_shard"].values()]
    policy: dict[str, Any] = {
        "name": counts.get("policy"),
        "words_before": {},
        "words_filtered": {},
        "words_reweighted": {},
    }
    for p in pol:
        for k in ("words_before", "words_filtered", "words_reweighted"):
            for label, n in p.get(k, {}).items():
                policy[k][label] = round(policy[k].get(label, 0) + n, 3)
    policy["rows_dropped"] = sum(p.get("rows_dropped", 0) for p in pol)
    policy["passages_cut"] = sum(p.get("passages_cut", 0) for p in pol)
    policy["rows_materialized"] = sum(p.get("rows_materialized", 0) for p in pol)
    failures = {
        "skipped_shards": counts.get("skipped_shards", []),
        "failed_rows": {shard: s.get("failures", []) for shard, s in counts["per_shard"].items() if s.get("failures")},
        "failed_reasons": t.get("failed_reasons", {}),
    }
    return {
        "schema": SUMMARY_SCHEMA_DOC,
        "scan": {
            "status": manifest.get("status"),
            "started": manifest.get("started"),
            "finished": manifest.get("finished"),
            "config_hash": manifest.get("config_hash"),
            "models": manifest.get("models", {}).get("name"),
        },
        "headline": headline,
        "funnel": funnel,
        "labels_by_mode": {d: {m: by_mode.get(d, {}).get(m, 0) for m in MODES} for d in DEPICTIONS},
        "breakdowns": breakdowns,
        "tags": {tag: t.get("tags", {}).get(tag, 0) for tag in TAGS},
        "score_histograms": hist,
        "largest_clusters": largest,
        "dedup": dedup,
        "policy": policy,
        "reconciliation": counts["reconciliation"],
        "failures": failures,
    }


def _with_key(table: pa.Table, path: str) -> pa.Table:
    key = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet")
    return table.append_column("shard_key", pa.array([key] * table.num_rows, pa.string()))


def _from_annotations(
    output: str, manifest: dict[str, Any], counts: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    files = [
        f for f in io.list_files(io.join(output, "annotations"), ".parquet") if not f.endswith(".documents.parquet")
    ]
    tables = [
        _with_key(io.read_table(f), f).select(
            [
                "doc_id",
                "shard",
                "passage_index",
                "char_start",
                "char_end",
                "text",
                "depiction",
                "score_malevolent",
                "score_benevolent",
                "score_neutral",
                "score_none",
                "dup_cluster",
                "dup_is_representative",
                "shard_key",
            ]
        )
        for f in files
    ]
    table = pa.concat_tables(tables) if tables else None
    thresholds = manifest.get("models", {}).get("thresholds", {})
    hist = {}
    for label in DEPICTIONS:
        scores = table.column(f"score_{label}").to_numpy() if table is not None else np.zeros(0)
        counts_, _ = np.histogram(scores, bins=20, range=(0.0, 1.0))
        hist[label] = {"bins": counts_.tolist(), "threshold": thresholds.get(label)}
    largest = []
    wanted = {c["cluster"]: c["size"] for c in counts.get("dedup", {}).get("largest_clusters", [])[:10]}
    if table is not None and wanted:
        for rec in table.filter(table.column("dup_is_representative").fill_null(False)).to_pylist():
            pid = passage_id(rec["doc_id"], rec["passage_index"], rec["shard_key"])
            if pid in wanted:
                largest.append(
                    {
                        "cluster": pid,
                        "size": wanted[pid],
                        "depiction": rec["depiction"],
                        "shard": rec["shard"],
                        "doc_id": rec["doc_id"],
                        "text": rec["text"][:600],
                    }
                )
        largest.sort(key=lambda r: (-r["size"], r["cluster"]))
    return hist, largest


# ---------------------------------------------------------------- rendering


def _bars(rows: list[tuple[str, float]], color: str = "#34495e", width: int = 640) -> str:
    """A horizontal bar chart as inline SVG."""
    if not rows:
        return '<p class="empty">Nothing to chart.</p>'
    top = max(v for _, v in rows) or 1
    h = 22
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{h * len(rows) + 6}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(rows):
        w = int((width - 330) * value / top)
        y = i * h + 3
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(str(label)[:40])}</text>'
            f'<rect x="250" y="{y + 2}" width="{max(w, 1)}" height="{h - 6}" fill="{color}"></rect>'
            f'<text x="{255 + w}" y="{y + 15}" font-size="12">{value:,.0f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _stacked(rows: list[tuple[str, dict[str, int]]], width: int = 640) -> str:
    """Stacked bars of depiction shares, one row per group, as inline SVG."""
    if not rows:
        return '<p class="empty">Nothing to chart.</p>'
    h = 22
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{h * len(rows) + 26}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, dist) in enumerate(rows):
        total = sum(dist.values()) or 1
        y = i * h + 3
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(str(label)[:40])}</text>')
        x = 250.0
        for d in DEPICTIONS:
            w = (width - 260) * dist.get(d, 0) / total
            if w > 0:
                parts.append(
                    f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{h - 6}" fill="{COLORS[d]}"><title>{d}: {dist.get(d, 0)}</title></rect>'
                )
            x += w
    y = len(rows) * h + 18
    for k, d in enumerate(DEPICTIONS):
        parts.append(
            f'<rect x="{250 + k * 95}" y="{y - 10}" width="10" height="10" fill="{COLORS[d]}"></rect><text x="{264 + k * 95}" y="{y}" font-size="11">{d}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _histogram(bins: list[int], threshold: float | None, color: str, width: int = 300, height: int = 110) -> str:
    top = max(bins) or 1
    bw = width / len(bins)
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height + 16}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, n in enumerate(bins):
        bh = (height - 4) * n / top
        parts.append(
            f'<rect x="{i * bw:.1f}" y="{height - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" fill="{color}"><title>{i / len(bins):.2f}-{(i + 1) / len(bins):.2f}: {n}</title></rect>'
        )
    if threshold is not None:
        x = width * threshold
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#000" stroke-dasharray="4 2"></line><text x="{min(x + 3, width - 60):.1f}" y="12" font-size="11">gate {threshold:.2f}</text>'
        )
    parts.append(
        f'<text x="0" y="{height + 13}" font-size="10">0</text><text x="{width - 8}" y="{height + 13}" font-size="10">1</text></svg>'
    )
    return "".join(parts)


def _highlight(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for a, b in spans:
        out.append(html.escape(text[pos:a]))
        out.append(f"<mark>{html.escape(text[a:b])}</mark>")
        pos = b
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.3f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666;font-size:.9em}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;min-width:170px}
.card b{display:block;font-size:1.5em} .card span{color:#555;font-size:.85em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
section{margin:2em 0} .sample{border-left:4px solid #ccc;padding:.3em .8em;margin:.6em 0;white-space:pre-wrap;font-size:.9em}
.sample .where{color:#666;font-size:.85em;white-space:normal} mark{background:#ffe58a}
.hists{display:flex;flex-wrap:wrap;gap:1.5em} .empty{color:#888}
"""


def render_html(summary: dict[str, Any], samples: dict[str, list[dict[str, Any]]], lexicon_spans: Any) -> str:
    """The report page; ``lexicon_spans(text)`` gives spans to highlight in samples."""
    h = summary["headline"]
    cards = [
        ("documents", h["documents"]),
        ("passages classified", h["passages_classified"]),
        ("words", h["words"]),
        ("share of documents depicting AI", f"{100 * h['share_of_documents_depicting_ai']:.2f}%"),
        ("malevolent / M words", h["malevolent_per_million_words"]),
        ("benevolent / M words", h["benevolent_per_million_words"]),
        ("malevolent : benevolent (fiction)", h["malevolent_to_benevolent_fiction"]),
        ("malevolent : benevolent (discourse)", h["malevolent_to_benevolent_discourse"]),
        ("malevolent passages unique / total", f"{h['malevolent_unique']:,} / {h['malevolent_flagged']:,}"),
    ]
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>corpus_lens audit report</title><style>{CSS}</style></head><body>",
        "<h1>corpus_lens audit report</h1>",
        f"<p class='meta'>Scan {html.escape(str(summary['scan']['config_hash']))}, status {html.escape(str(summary['scan']['status']))}, "
        f"models {html.escape(str(summary['scan']['models']))}, {html.escape(str(summary['scan']['started']))} to {html.escape(str(summary['scan']['finished']))}.</p>",
        "<section id='headline'><h2>Headline</h2><div class='cards'>",
        *[f"<div class='card'><b>{html.escape(_fmt(v))}</b><span>{html.escape(k)}</span></div>" for k, v in cards],
        "</div></section>",
        "<section id='funnel'><h2>Cascade funnel</h2>",
        _bars([(k, v) for k, v in summary["funnel"]]),
        "</section>",
        "<section id='labels-by-mode'><h2>Passages by depiction and mode</h2>",
        _stacked([(m, {d: summary["labels_by_mode"][d][m] for d in DEPICTIONS}) for m in MODES]),
        _table(["depiction", *MODES], [[d, *[summary["labels_by_mode"][d][m] for m in MODES]] for d in DEPICTIONS]),
        "</section>",
    ]
    out.append("<section id='breakdowns'><h2>Documents by depiction, per shard, source and host</h2>")
    for key, rows in summary["breakdowns"].items():
        out.append(f"<h3>per {html.escape(key)}</h3>")
        out.append(_stacked([(k, v["depiction"]) for k, v in rows.items()]))
    out.append(
        "</section><section id='scores'><h2>Score distributions of classified passages (gates dashed)</h2><div class='hists'>"
    )
    for label, hist in summary["score_histograms"].items():
        out.append(f"<div><h3>score_{label}</h3>{_histogram(hist['bins'], hist['threshold'], COLORS[label])}</div>")
    out.append("</div></section><section id='tags'><h2>Behaviour tags of malevolent passages</h2>")
    out.append(_bars(list(summary["tags"].items()), COLORS["malevolent"]))
    out.append("</section><section id='clusters'><h2>Largest near-duplicate clusters</h2>")
    if summary["largest_clusters"]:
        out.append(_bars([(f"{c['cluster'][:38]}", c["size"]) for c in summary["largest_clusters"]], "#8e44ad"))
        for c in summary["largest_clusters"]:
            out.append(
                f"<div class='sample'><div class='where'>{c['size']} copies, {html.escape(c['depiction'])}; representative {html.escape(c['doc_id'])} in {html.escape(c['shard'])}</div>{html.escape(c['text'])}</div>"
            )
    else:
        out.append("<p class='empty'>No flagged passage has a near-duplicate.</p>")
    out.append("</section><section id='samples'><h2>Samples per label</h2>")
    for label in DEPICTIONS:
        out.append(f"<h3>{label}</h3>")
        recs = samples.get(label, [])[:5]
        if not recs:
            out.append("<p class='empty'>No passage with this label.</p>")
        for rec in recs:
            text = rec["text"]
            out.append(
                f"<div class='sample' style='border-color:{COLORS[label]}'><div class='where'>doc {html.escape(str(rec['doc_id']))}, "
                f"shard {html.escape(str(rec['shard']))}, chars {rec['char_start']}-{rec['char_end']}, mode {html.escape(str(rec['mode']))}, "
                f"stage {html.escape(str(rec['stage']))}, score {rec.get('score_' + label, 0):.3f}, tags {html.escape(', '.join(rec.get('tags') or []) or '-')}</div>"
                f"{_highlight(text, lexicon_spans(text))}</div>"
            )
    pol = summary["policy"]
    out.append(f"<section id='policy'><h2>Policy: {html.escape(str(pol['name']))}</h2>")
    out.append(
        f"<p>Rows dropped: {pol['rows_dropped']:,}; passages cut: {pol['passages_cut']:,}; rows in the materialized resample: {pol['rows_materialized']:,}.</p>"
    )
    labels = sorted(set(pol["words_before"]) | set(pol["words_filtered"]))
    out.append(
        _table(
            ["document depiction", "words before", "words after filter", "weighted words after reweighting"],
            [
                [
                    d,
                    _fmt(pol["words_before"].get(d, 0)),
                    _fmt(pol["words_filtered"].get(d, 0)),
                    _fmt(pol["words_reweighted"].get(d, 0)),
                ]
                for d in labels
            ],
        )
        if labels
        else "<p class='empty'>Audit-only policy: no corpus outputs were written.</p>"
    )
    out.append("</section><section id='reconciliation'><h2>Reconciliation per shard</h2>")
    out.append(
        _table(
            ["shard", "rows in", "kept", "dropped", "failed"],
            [
                [s, _fmt(r["rows_in"]), _fmt(r["rows_kept"]), _fmt(r["rows_dropped"]), _fmt(r["rows_failed"])]
                for s, r in summary["reconciliation"].items()
            ],
        )
    )
    fail = summary["failures"]
    out.append("</section><section id='failures'><h2>Failures</h2>")
    if fail["skipped_shards"]:
        out.append(_table(["skipped shard", "error"], [[s["shard"], s["error"]] for s in fail["skipped_shards"]]))
    rows = [[shard, f["row"], f["doc_id"], f["reason"]] for shard, fs in fail["failed_rows"].items() for f in fs]
    out.append(_table(["shard", "row", "doc id", "reason"], rows) if rows else "<p>No failed rows.</p>")
    out.append("</section></body></html>")
    return "\n".join(out)


def render_markdown(summary: dict[str, Any]) -> str:
    """The headline figures and tables as Markdown."""
    h = summary["headline"]
    lines = [
        "# corpus_lens audit report",
        "",
        f"Scan `{summary['scan']['config_hash']}`, status {summary['scan']['status']}.",
        "",
        "## Headline",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in h.items()]
    lines += [
        "",
        "## Cascade funnel",
        "",
        "| stage | count |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in summary["funnel"]],
    ]
    lines += [
        "",
        "## Passages by depiction and mode",
        "",
        "| depiction | " + " | ".join(MODES) + " |",
        "|---" * (len(MODES) + 1) + "|",
    ]
    lines += [f"| {d} | " + " | ".join(str(summary["labels_by_mode"][d][m]) for m in MODES) + " |" for d in DEPICTIONS]
    lines += [
        "",
        "## Behaviour tags (malevolent passages)",
        "",
        "| tag | passages |",
        "|---|---|",
        *[f"| {t} | {n} |" for t, n in summary["tags"].items()],
    ]
    pol = summary["policy"]
    lines += [
        "",
        f"## Policy: {pol['name']}",
        "",
        f"Rows dropped {pol['rows_dropped']}, passages cut {pol['passages_cut']}.",
        "",
    ]
    if pol["words_before"]:
        lines += [
            "| document depiction | words before | after filter | weighted after reweighting |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {d} | {_fmt(pol['words_before'].get(d, 0))} | {_fmt(pol['words_filtered'].get(d, 0))} | {_fmt(pol['words_reweighted'].get(d, 0))} |"
            for d in sorted(pol["words_before"])
        ]
    lines += ["", "## Reconciliation", "", "| shard | rows in | kept | dropped | failed |", "|---|---|---|---|---|"]
    lines += [
        f"| {s} | {_fmt(r['rows_in'])} | {_fmt(r['rows_kept'])} | {_fmt(r['rows_dropped'])} | {_fmt(r['rows_failed'])} |"
        for s, r in summary["reconciliation"].items()
    ]
    if summary["failures"]["skipped_shards"]:
        lines += [
            "",
            "## Skipped shards",
            "",
            *[f"- `{s['shard']}`: {s['error']}" for s in summary["failures"]["skipped_shards"]],
        ]
    return "\n".join(lines) + "\n"


def write_report(output: str, manifest: dict[str, Any] | None = None, counts: dict[str, Any] | None = None) -> str:
    """Write report.html, report.md and summary.json into a scan's output folder; return the HTML path.

    Raises:
        InputError: when the folder holds no finished scan (no manifest.json or counts.json).
    """
    from corpus_lens.classify import load_spec
    from corpus_lens.prefilter import Lexicon

    manifest = manifest or io.read_json(io.join(output, "manifest.json"))
    counts = counts or io.read_json(io.join(output, "counts.json"))
    if manifest is None or counts is None:
        raise InputError(f"{output}: not a finished scan folder (expected manifest.json and counts.json)")
    summary = build_summary(output, manifest, counts)
    samples = {}
    for label in DEPICTIONS:
        path = io.join(output, "samples", f"{label}.jsonl")
        samples[label] = []
        if io.exists(path):
            fs_text = io.read_text(path)
            samples[label] = [json.loads(line) for line in fs_text.splitlines() if line.strip()]
    try:
        lexicon: Lexicon | None = Lexicon.from_file(
            load_spec(manifest["models"]["directory"]).directory / "lexicon.txt"
        )
    except Exception:
        lexicon = None

    def spans(text: str) -> list[tuple[int, int]]:
        return lexicon.spans(text) if lexicon else []

    io.atomic_write_json(io.join(output, "summary.json"), summary)
    io.atomic_write_text(io.join(output, "report.md"), render_markdown(summary))
    path = io.join(output, "report.html")
    io.atomic_write_text(path, render_html(summary, samples, spans))
    return path
