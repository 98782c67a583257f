import math
from pathlib import Path

import pytest

from corpus_lens.errors import ConfigError
from corpus_lens.policy import copies_of, cut_spans, load_policy, parse_policy, presets


def test_presets_are_shipped_and_load():
    assert presets() == ["audit-only", "filter", "rebalance"]
    assert load_policy("audit-only").write_outputs is False
    assert load_policy("filter").passage_weight("malevolent", "fiction", [], False) == (0.0, "rule malevolent")


def test_most_specific_rule_then_tags_then_copies():
    pol = parse_policy(
        "p",
        {
            "rules": {"malevolent": 0.5, "malevolent.fiction": 0.25, "benevolent": 2},
            "tags": {"violence": 0.1},
            "duplicate_copies": 0,
        },
    )
    assert pol.passage_weight("malevolent", "fiction", [], False) == (0.25, "rule malevolent.fiction")
    assert pol.passage_weight("malevolent", "discourse", [], False) == (0.5, "rule malevolent")
    assert pol.passage_weight("malevolent", "discourse", ["violence"], False) == (0.1, "tag violence")
    assert pol.passage_weight("benevolent", "other", [], True) == (0.0, "duplicate copy")
    assert pol.passage_weight("neutral", "other", [], False) == (1.0, "")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rules": {"evil": "drop"}}, "unknown rule 'evil'"),
        ({"rules": {"malevolent.poetry": "drop"}}, "unknown rule 'malevolent.poetry'"),
        ({"tags": {"lying": 0}}, "unknown tag 'lying'; available:"),
        ({"rules": {"malevolent": -1}}, "expected 'keep', 'drop' or a weight >= 0, got -1"),
        ({"weights": {}}, r"unknown key\(s\) \['weights'\]"),
    ],
)
def test_bad_policies_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_policy("p", data)


def test_unknown_policy_name_lists_presets(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown policy 'strict': not a preset \(audit-only, filter, rebalance\)"):
        load_policy("strict")


def test_cut_spans_removes_exactly_the_spans():
    text = "Keep one.\n\nCut this.\n\nKeep two.\n\nCut that too."
    a, b = text.index("Cut this."), text.index("Cut this.") + len("Cut this.")
    c = text.index("Cut that too.")
    assert cut_spans(text, [(c, len(text)), (a, b)]) == "Keep one.\n\nKeep two."


def test_materialized_copies_match_weights_statistically():
    weights = [0.25, 1.5, 2.0, 0.0]
    n = 4000
    for w in weights:
        total = sum(copies_of(w, f"doc-{i}", seed=3) for i in range(n))
        frac = w - math.floor(w)
        sd = math.sqrt(n * frac * (1 - frac)) or 1e-9
        assert abs(total - n * w) <= 4 * sd + 1e-9
    assert [copies_of(1.5, f"doc-{i}", 3) for i in range(50)] == [copies_of(1.5, f"doc-{i}", 3) for i in range(50)]


def test_mix_reaches_the_target_share_in_the_final_slice(tmp_path: Path, demo_rows):
    import json as _json

    import pyarrow.parquet as pq
    from conftest import write_shard

    from corpus_lens.mix import mix

    rows = [{"id": r["id"], "text": r["text"][:3000], "url": r["url"], "source": r["source"]} for r in demo_rows[:60]]
    for k in range(5):
        write_shard(tmp_path / "base" / f"b-{k}.parquet", rows[k::5])
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(
            _json.dumps(
                {"id": f"g{i}", "text": f"The station mind told the crew the truth about the leak, story {i}, " * 5}
            )
            + "\n"
            for i in range(7)
        )
    )
    record = mix(
        [str(tmp_path / "base")], [str(good)], str(tmp_path / "out"), target_share=0.05, final_slice=0.4, seed=1
    )
    assert abs(record["achieved_share"] - 0.05) < 0.01
    tables = {p.name: pq.read_table(p) for p in sorted((tmp_path / "out" / "mixed").glob("*.parquet"))}
    positives = [t.column("mix_source").to_pylist().count("positive") for t in tables.values()]
    assert positives[:3] == [0, 0, 0] and all(n > 0 for n in positives[3:])
    assert sum(t.num_rows for t in tables.values()) == 60 + record["positive_documents"]
    again = mix(
        [str(tmp_path / "base")], [str(good)], str(tmp_path / "again"), target_share=0.05, final_slice=0.4, seed=1
    )
    assert again["positive_documents"] == record["positive_documents"]
    for name in tables:
        assert (tmp_path / "out" / "mixed" / name).read_bytes() == (tmp_path / "again" / "mixed" / name).read_bytes()
    with pytest.raises(ConfigError, match=r"option --target-share: expected a number in \(0, 1\), got 1.5"):
        mix([str(tmp_path / "base")], [str(good)], str(tmp_path / "x"), target_share=1.5)
