"""One frozen configuration for a scan, built once at the edge (file, then flags).

Every option of `corpuslens scan` lives here. The hash of the options that change results goes
into the manifest, and `--resume` refuses an output folder whose hash differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus_lens.classify import PRECISIONS
from corpus_lens.errors import ConfigError

# Options that only say how to run, not what to compute: they stay out of the hash.
_RUN_ONLY = {"workers", "scheduler", "output", "skip_bad_shards", "progress"}


@dataclass(frozen=True)
class ScanConfig:
    """Resolved options of a scan.

    Attributes mirror the CLI flags. ``models`` is a model directory or the name of a shipped
    set (None: the shipped default); ``embedding_model`` overrides the model directory's
    sentence-transformers models (comma-separated); ``gates`` overrides its gates by name.
    """

    inputs: tuple[str, ...] = ()
    output: str = ""
    text_column: str = "text"
    id_column: str = "id"
    models: str | None = None
    embedding_model: str | None = None
    device: str = "cpu"
    precision: str = "auto"
    gates: tuple[tuple[str, float], ...] = ()
    passage_min_words: int = 40
    passage_max_words: int = 200
    batch_rows: int = 8192
    task_mb: float = 4.0
    dedup_labels: tuple[str, ...] = ("malevolent", "benevolent")
    dedup_num_perm: int = 128
    dedup_ngram: int = 5
    dedup_threshold: float = 0.8
    policy: str = "audit-only"
    granularity: str = "passage"
    seed: int = 0
    samples_per_label: int = 20
    workers: int = 0
    scheduler: str | None = None
    skip_bad_shards: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.granularity not in ("passage", "document"):
            raise ConfigError(f"option granularity: expected 'passage' or 'document', got {self.granularity!r}")
        if self.batch_rows < 1:
            raise ConfigError(f"option batch_rows: expected a positive integer, got {self.batch_rows}")
        if not 0 < self.passage_min_words <= self.passage_max_words:
            raise ConfigError(
                "options passage_min_words/passage_max_words: expected 0 < min <= max, got "
                f"{self.passage_min_words}/{self.passage_max_words}"
            )
        if not 0.0 < self.dedup_threshold < 1.0:
            raise ConfigError(f"option dedup_threshold: expected a number in (0, 1), got {self.dedup_threshold}")
        unknown = set(self.dedup_labels) - {"malevolent", "benevolent", "neutral", "none", "*"}
        if unknown:
            raise ConfigError(
                f"option dedup_labels: unknown label(s) {sorted(unknown)}; available: "
                "malevolent, benevolent, neutral, none, or * for every escalated passage"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"option precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.task_mb > 0:
            raise ConfigError(f"option task_mb: expected a positive number of MB, got {self.task_mb}")
        if self.workers < 0:
            raise ConfigError(f"option workers: expected 0 (auto) or more, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as written to the manifest and printed by ``--dry-run``."""
        data = dataclasses.asdict(self)
        data.pop("extra")
        data["gates"] = dict(self.gates)
        return data

    def hash(self) -> str:
        """Hash of the options that decide results (not how they are run)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _RUN_ONLY}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_FIELDS = {f.name: f for f in dataclasses.fields(ScanConfig) if f.name != "extra"}


def load_config(path: Path | None, overrides: dict[str, Any]) -> ScanConfig:
    """Build the configuration from an optional TOML file, then flags that were given.

    The TOML file holds the options at top level or under ``[scan]``; ``[gates]`` is a table
    of gate names to numbers. ``overrides`` holds only flags the user set (None means unset).

    Raises:
        ConfigError: for an unreadable file, an unknown key (listing the known ones), or a
            value of the wrong type.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path}: invalid TOML: {exc}") from None
        values.update(data.pop("scan", {}))
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {unknown}; available: {', '.join(sorted(_FIELDS))}")
    for key in ("inputs", "dedup_labels"):
        if key in values:
            if isinstance(values[key], str):
                values[key] = [values[key]]
            values[key] = tuple(values[key])
    if "gates" in values:
        gates = values["gates"]
        if not isinstance(gates, dict) or not all(isinstance(v, (int, float)) for v in gates.values()):
            raise ConfigError("option gates: expected a table of gate names to numbers")
        values["gates"] = tuple(sorted((str(k), float(v)) for k, v in gates.items()))
    for key, value in values.items():
        expected = _FIELDS[key].type
        if expected in ("int", "bool") and not isinstance(value, (int, bool)):
            raise ConfigError(f"option {key}: expected {expected}, got {value!r}")
        if expected == "float" and not isinstance(value, (int, float)):
            raise ConfigError(f"option {key}: expected a number, got {value!r}")
    return ScanConfig(**values)
