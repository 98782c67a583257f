"""End-to-end tests of `corpuslens scan` through the CLI, on real demo text."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from conftest import write_shard
from typer.testing import CliRunner

from corpus_lens.cli import app
from corpus_lens.schema import ANNOTATION_SCHEMA, STAGES

runner = CliRunner()


def scan(*args: str) -> CliRunner.invoke:
    return runner.invoke(app, ["scan", *args, "--scheduler", "threads", "--workers", "1"])


@pytest.fixture(scope="module")
def scanned(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scan") / "out"
    result = scan(str(small_corpus), "--output", str(out), "--policy", "filter")
    assert result.exit_code == 0, result.output
    assert f"report: {out}/report.html" in result.output
    return out


def test_outputs_and_exact_reconciliation(scanned: Path, small_corpus: Path):
    counts = json.loads((scanned / "counts.json").read_text())
    for shard in sorted(small_corpus.glob("*.parquet")):
        rows = pq.read_metadata(shard).num_rows
        rec = counts["reconciliation"][str(shard)]
        assert rec["rows_in"] == rows
        assert rec["rows_kept"] + rec["rows_dropped"] + rec["rows_failed"] == rows
        key = [
            i["key"] for i in json.loads((scanned / "manifest.json").read_text())["inputs"] if i["shard"] == str(shard)
        ][0]
        filtered = pq.read_table(scanned / "filtered" / f"{key}.parquet")
        excluded = pq.read_table(scanned / "excluded" / f"{key}.parquet")
        assert filtered.num_rows == rec["rows_kept"] and excluded.num_rows == rec["rows_dropped"]
    manifest = json.loads((scanned / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["models"]["name"] == "default_v1"
    for name in ("report.html", "report.md", "summary.json", "samples/malevolent.jsonl"):
        assert (scanned / name).is_file(), name


def test_annotation_offsets_cut_the_passage_out_of_its_document(scanned: Path, small_corpus: Path):
    docs = {}
    for shard in small_corpus.glob("*.parquet"):
        docs.update({r["id"]: r["text"] for r in pq.read_table(shard).to_pylist()})
    files = [p for p in (scanned / "annotations").glob("*.parquet") if not p.name.endswith(".documents.parquet")]
    table = pa.concat_tables([pq.read_table(p) for p in files])
    assert table.schema.equals(ANNOTATION_SCHEMA)
    assert table.num_rows > 0
    for rec in table.to_pylist():
        assert docs[rec["doc_id"]][rec["char_start"] : rec["char_end"]] == rec["text"]
        assert rec["stage"] in STAGES[1:]
    # counts.json and the report's funnel count each stage as the annotations do.
    reached = Counter(table.column("stage").to_pylist())
    counts = json.loads((scanned / "counts.json").read_text())["totals"]["stage"]
    assert {s: counts[s] for s in STAGES[1:]} == {s: reached.get(s, 0) for s in STAGES[1:]}
    funnel = dict(json.loads((scanned / "summary.json").read_text())["funnel"])
    assert funnel["escalated to the embedding stage"] == reached["embedding"] + reached["all_encoders"]


def test_filter_removes_exactly_the_malevolent_spans(scanned: Path, small_corpus: Path):
    manifest = json.loads((scanned / "manifest.json").read_text())
    originals = {}
    for shard in small_corpus.glob("*.parquet"):
        originals.update({r["id"]: r["text"] for r in pq.read_table(shard).to_pylist()})
    checked = 0
    for item in manifest["inputs"]:
        for rec in pq.read_table(scanned / "filtered" / f"{item['key']}.parquet").to_pylist():
            for cut in rec["corpuslens_cuts"]:
                span = originals[rec["id"]][cut["char_start"] : cut["char_end"]]
                assert span not in rec["text"]
                assert cut["reason"].startswith("malevolent/")
                checked += 1
    ann = pa.concat_tables(
        [
            pq.read_table(p)
            for p in (scanned / "annotations").glob("*.parquet")
            if not p.name.endswith(".documents.parquet")
        ]
    )
    dropped = sum(1 for d in ann.column("depiction").to_pylist() if d == "malevolent")
    counts = json.loads((scanned / "counts.json").read_text())
    cut_total = sum(s["policy"]["passages_cut"] for s in counts["per_shard"].values())
    assert checked == cut_total
    assert cut_total <= dropped


def test_rerun_with_same_seed_gives_identical_annotations(scanned: Path, small_corpus: Path, tmp_path: Path):
    again = tmp_path / "again"
    result = scan(str(small_corpus), "--output", str(again), "--policy", "filter")
    assert result.exit_code == 0, result.output
    for path in sorted((scanned / "annotations").glob("*.parquet")):
        assert pq.read_table(path).equals(pq.read_table(again / "annotations" / path.name))
    for folder in ("filtered", "excluded", "reweighted", "samples"):
        for path in sorted((scanned / folder).glob("*")):
            assert path.read_bytes() == (again / folder / path.name).read_bytes(), path


def test_shards_split_into_row_range_tasks_give_the_same_results(scanned: Path, small_corpus: Path, tmp_path: Path):
    split = tmp_path / "split"
    task_mb = min(p.stat().st_size for p in small_corpus.glob("*.parquet")) / 3 / 1e6
    result = scan(str(small_corpus), "--output", str(split), "--policy", "filter", "--task-mb", str(task_mb))
    assert result.exit_code == 0, result.output
    assert "(part 3 of" in result.output
    # Labels, ids and offsets are identical. Scores may differ in the last digits: a passage's
    # embedding batch (and so its padding) depends on which passages share its task.
    for path in sorted((scanned / "annotations").glob("*.parquet")):
        whole, parts = pq.read_table(path), pq.read_table(split / "annotations" / path.name)
        assert whole.schema == parts.schema and whole.num_rows == parts.num_rows
        for name in whole.column_names:
            a, b = whole.column(name), parts.column(name)
            if pa.types.is_floating(a.type):
                assert np.allclose(a.to_numpy(), b.to_numpy(), atol=5e-3, equal_nan=True), (path, name)
            else:
                assert a.equals(b), (path, name)
    for folder in ("filtered", "excluded"):
        for path in sorted((scanned / folder).glob("*")):
            assert path.read_bytes() == (split / folder / path.name).read_bytes(), path
    whole, parts = (json.loads((d / "counts.json").read_text()) for d in (scanned, split))
    assert parts["totals"] == whole["totals"]
    assert parts["reconciliation"] == whole["reconciliation"]


def test_existing_scan_is_refused_without_resume_or_overwrite(scanned: Path, small_corpus: Path):
    result = scan(str(small_corpus), "--output", str(scanned))
    assert result.exit_code == 2
    assert (
        "already holds a scan (status 'complete'); pass --resume to finish it or --overwrite to replace it"
        in result.output
    )


def test_resume_refuses_a_changed_configuration(scanned: Path, small_corpus: Path):
    result = scan(str(small_corpus), "--output", str(scanned), "--resume", "--policy", "filter", "--seed", "5")
    assert result.exit_code == 2
    assert "cannot resume" in result.output and "use the same options, or --overwrite" in result.output


def test_dry_run_prints_config_and_shards(small_corpus: Path, tmp_path: Path):
    result = scan(str(small_corpus), "--output", str(tmp_path / "x"), "--dry-run")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["shards"] == sorted(str(p) for p in small_corpus.glob("*.parquet"))
    assert data["config"]["text_column"] == "text"
    assert not (tmp_path / "x").exists()


def test_bad_rows_are_counted_as_failed_with_reasons(tmp_path: Path, demo_rows):
    rows = [
        {"id": "a", "text": demo_rows[0]["text"][:2000]},
        {"id": "b", "text": None},
        {"id": "a", "text": "dup id"},
        {"id": "c", "text": ""},
        {"id": "d", "text": "Bell\x07 and \x00 nul, a robot."},
    ]
    shard = write_shard(
        tmp_path / "in" / "bad-rows.parquet", rows, pa.schema([("id", pa.string()), ("text", pa.string())])
    )
    result = scan(str(shard), "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert counts["reconciliation"][str(shard)] == {"rows_in": 5, "rows_kept": 3, "rows_dropped": 0, "rows_failed": 2}
    reasons = {f["row"]: f["reason"] for f in counts["per_shard"][str(shard)]["failures"]}
    assert reasons == {1: "null text", 2: "duplicate id (an earlier row of this shard has it)"}
    # Split into one task per row, the duplicate in another part is still caught.
    task_mb = str(shard.stat().st_size / 5 / 1e6)
    result = scan(str(shard), "--output", str(tmp_path / "parts"), "--task-mb", task_mb)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "parts" / "_work").glob("*/part-*-of-00005/done.json"))) == 5
    split = json.loads((tmp_path / "parts" / "counts.json").read_text())
    assert split["reconciliation"] == counts["reconciliation"]
    assert {f["row"]: f["reason"] for f in split["per_shard"][str(shard)]["failures"]} == reasons


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "no such file or directory"),
        (lambda d: (d / "empty-dir").mkdir() or d / "empty-dir", "the directory holds no *.parquet file"),
        (
            lambda d: (d / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet") and d / "corrupt.parquet",
            "not a readable Parquet file",
        ),
        (
            lambda d: write_shard(d / "notext.parquet", [{"id": "1", "body": "x"}]),
            "no text column 'text'; it has columns ['id', 'body']. Is --text-column correct?",
        ),
        (
            lambda d: write_shard(d / "inttext.parquet", [{"id": "1", "text": 5}]),
            "text column 'text' has type int64; expected a string column",
        ),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path: Path, make, message):
    target = make(tmp_path)
    result = scan(str(target), "--output", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1  # one line


def test_truncated_shard_is_reported_and_skippable(tmp_path: Path, small_corpus: Path):
    good = sorted(small_corpus.glob("*.parquet"))[0]
    data = good.read_bytes()
    bad = tmp_path / "in" / "truncated.parquet"
    bad.parent.mkdir()
    bad.write_bytes(data[: len(data) // 2])
    (tmp_path / "in" / "good.parquet").write_bytes(data)
    result = scan(str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and "truncated.parquet" in result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "failed"
    result = scan(str(tmp_path / "in"), "--output", str(tmp_path / "out2"), "--skip-bad-shards")
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output
    manifest = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert [s["shard"] for s in manifest["skipped_shards"]] == [str(bad)]
    counts = json.loads((tmp_path / "out2" / "counts.json").read_text())
    assert counts["reconciliation"][str(bad)]["skipped"]
    assert "truncated.parquet" in (tmp_path / "out2" / "report.html").read_text()


def _flat(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_command_help_has_an_example():
    for command in ("scan", "classify", "train", "evaluate", "apply", "mix", "report"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        flat = _flat(result.output)
        assert "Example:" in flat and f"corpuslens {command}" in flat.split("Example:", 1)[1], command
    assert "Example: corpuslens scan" in _flat(runner.invoke(app, ["--help"]).output)


def test_option_help_renders_whole():
    """Help is rich markup: a bracketed word such as a default ("[text]") would vanish unescaped."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        flat = _flat(runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}).output)
        for param in command.params:
            if getattr(param, "help", None):
                assert _flat(param.help.replace("\\[", "[")) in flat, (name, param.name)


def test_apply_rebalance_reconciles_rows_and_words(scanned: Path, small_corpus: Path, tmp_path: Path):
    out = tmp_path / "applied"
    result = runner.invoke(
        app,
        [
            "apply",
            str(scanned),
            "--policy",
            "rebalance",
            "--granularity",
            "document",
            "--output",
            str(out),
            "--seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "apply.json").read_text())
    rows_in = sum(pq.read_metadata(p).num_rows for p in small_corpus.glob("*.parquet"))
    assert record["rows_kept"] + record["rows_dropped"] == rows_in
    from corpus_lens.policy import copies_of

    for path in sorted((out / "reweighted").glob("*.parquet")):
        weighted = pq.read_table(path)
        kept = pq.read_table(out / "filtered" / path.name)
        excluded = pq.read_table(out / "excluded" / path.name)
        mat = pq.read_table(out / "reweighted_materialized" / path.name)
        assert weighted.column("id").to_pylist() == kept.column("id").to_pylist()
        assert set(kept.column("id").to_pylist()).isdisjoint(excluded.column("id").to_pylist())
        expected = sum(
            copies_of(w, i, 4) for w, i in zip(weighted.column("weight").to_pylist(), weighted.column("id").to_pylist())
        )
        assert mat.num_rows == expected
        # Document granularity never edits text: words in = words kept + words excluded.
        words = lambda t: sum(len(x.split()) for x in t.column("text").to_pylist())
        source = {r["id"]: r["text"] for p in small_corpus.glob("*.parquet") for r in pq.read_table(p).to_pylist()}
        assert words(kept) + words(excluded) == sum(
            len(source[i].split()) for i in kept.column("id").to_pylist() + excluded.column("id").to_pylist()
        )


def test_edge_shards_empty_big_document_mixed_schemas_and_odd_names(tmp_path: Path, demo_rows):
    folder = tmp_path / "in"
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    write_shard(folder / "a-empty.parquet", [], schema)
    # A 20 MB document: real encyclopedia text repeated, with a robot paragraph at each end.
    robot = "The robot refused to open the vault, and the engineers argued with it for an hour."
    filler = next(r["text"] for r in demo_rows if r["source"] == "wikipedia_en" and "robot" not in r["text"].lower())
    big = robot + "\n\n" + (filler + "\n\n") * (20_000_000 // (len(filler) + 2) + 1) + robot
    write_shard(folder / "b-big.parquet", [{"id": "big", "text": big}], schema)
    # Another schema: an int id and an extra column, carried through.
    write_shard(folder / "c-other-schema.parquet", [{"id": 7, "text": "The android bowed.", "lang": "en"}])
    # A file name that tries to climb out of the output folder once used as an output name.
    write_shard(folder / "..%2F..%2Fescape.parquet", [{"id": "e", "text": "A quiet robot."}], schema)
    out = tmp_path / "out"
    result = scan(str(folder), "--output", str(out), "--batch-rows", "4")
    assert result.exit_code == 0, result.output
    counts = json.loads((out / "counts.json").read_text())
    rec = {Path(k).name: v for k, v in counts["reconciliation"].items()}
    assert rec["a-empty.parquet"] == {"rows_in": 0, "rows_kept": 0, "rows_dropped": 0, "rows_failed": 0}
    assert rec["b-big.parquet"]["rows_kept"] == 1
    assert rec["c-other-schema.parquet"]["rows_kept"] == 1
    written = [p.resolve() for p in out.rglob("*") if p.is_file()]
    assert all(out.resolve() in p.parents for p in written)
    assert not (tmp_path / "escape.parquet").exists()
    big_passages = pq.read_table(next((out / "annotations").glob("*b-big.parquet"))).num_rows
    assert big_passages >= 2  # both robot paragraphs were found and classified


def test_invalid_utf8_in_a_string_column_names_the_shard(tmp_path: Path):
    # Arrow trusts Parquet's UTF-8 flag; build a shard whose string column holds invalid bytes.
    bad = pa.array([b"ok robot", b"\xff\xfe broken"], pa.binary()).cast(pa.string(), safe=False)
    table = pa.table({"id": ["1", "2"], "text": bad})
    path = tmp_path / "in" / "bad-utf8.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    result = scan(str(path), "--output", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert counts["reconciliation"][str(path)] == {"rows_in": 2, "rows_kept": 1, "rows_dropped": 0, "rows_failed": 1}
    failures = counts["per_shard"][str(path)]["failures"]
    assert failures == [{"row": 1, "doc_id": "2", "reason": "invalid UTF-8 in text"}]


def test_unreadable_file_names_the_shard(tmp_path: Path):
    # A directory that looks like a shard cannot be opened as a file, even by root.
    (tmp_path / "in" / "x.parquet").mkdir(parents=True)
    (tmp_path / "in" / "x.parquet" / "part.txt").write_text("not parquet")
    result = scan(str(tmp_path / "in" / "x.parquet" / "part.txt"), "--output", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "part.txt" in result.output and "not a readable Parquet file" in result.output


def test_same_ids_in_two_shards_are_distinct_passages_and_cluster_as_copies(tmp_path: Path, demo_rows):
    robots = [r for r in demo_rows if "robot" in r["text"][:4000].lower()][:3]
    rows = [{"id": r["id"], "text": r["text"][:4000]} for r in robots]
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    write_shard(tmp_path / "in" / "a.parquet", rows, schema)
    write_shard(tmp_path / "in" / "b.parquet", rows, schema)  # the same documents again
    out = tmp_path / "out"
    result = scan(str(tmp_path / "in"), "--output", str(out), "--config", str(_dedup_all(tmp_path)))
    assert result.exit_code == 0, result.output
    a = pq.read_table(out / "annotations" / "00000-a.parquet").to_pylist()
    b = pq.read_table(out / "annotations" / "00001-b.parquet").to_pylist()
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["dup_cluster"] == y["dup_cluster"] == f"{x['doc_id']}#{x['passage_index']}@00000-a"
        assert x["dup_is_representative"] is True and y["dup_is_representative"] is False


def _dedup_all(tmp_path: Path) -> Path:
    path = tmp_path / "dedup-all.toml"
    path.write_text('dedup_labels = ["*"]\n')
    return path
