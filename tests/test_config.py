from pathlib import Path

import pytest

from corpus_lens.config import ScanConfig, load_config
from corpus_lens.errors import ConfigError


def test_flags_override_file_and_unset_flags_do_not(tmp_path: Path):
    path = tmp_path / "scan.toml"
    path.write_text(
        '[scan]\ninputs = ["a.parquet"]\nseed = 7\ntext_column = "body"\n[gates]\nfasttext_confidence = 0.8\n'
    )
    cfg = load_config(path, {"seed": 9, "text_column": None})
    assert cfg.seed == 9
    assert cfg.text_column == "body"
    assert cfg.inputs == ("a.parquet",)
    assert dict(cfg.gates) == {"fasttext_confidence": 0.8}


def test_unknown_key_lists_what_is_available(tmp_path: Path):
    path = tmp_path / "scan.toml"
    path.write_text("txt_column = 'body'\n")
    with pytest.raises(ConfigError, match=r"unknown configuration key\(s\) \['txt_column'\]; available: .*text_column"):
        load_config(path, {})


def test_wrong_type_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="option seed: expected int, got 'x'"):
        load_config(None, {"seed": "x"})
    with pytest.raises(ConfigError, match="option granularity: expected 'passage' or 'document'"):
        ScanConfig(granularity="chapter")
    with pytest.raises(ConfigError, match=r"option dedup_labels: unknown label\(s\) \['evil'\]"):
        ScanConfig(dedup_labels=("evil",))


def test_hash_ignores_how_a_scan_runs_but_not_what_it_computes():
    base = ScanConfig(inputs=("a",), output="o")
    assert base.hash() == ScanConfig(inputs=("a",), output="elsewhere", workers=8, scheduler="tcp://x:1").hash()
    assert base.hash() != ScanConfig(inputs=("a",), output="o", seed=1).hash()
