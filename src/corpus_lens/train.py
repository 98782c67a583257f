"""`corpuslens train`: reproduce a model directory from labelled passages.

Input: a data directory with ``passages.jsonl`` (one labelled passage per line: ``id``,
``text``, ``depiction``, ``mode``, ``tags``, ``split``) and ``lexicon.txt``; optionally
``probes.jsonl`` (behaviour templates, see ``probe_passages``) and ``checks/*.jsonl`` (held-out
labelled passages in no split, see ``score_checks``). Output: a model directory that
``classify.load_spec`` reads, with ``MODEL_CARD.md`` and ``metrics.json`` measured on the test
split (and on the probes and checks). Deterministic given the seed (fastText runs on one thread; the head
is fit full-batch with AdamW on one thread).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from corpus_lens import __version__
from corpus_lens.classify import (
    DEFAULT_EMBEDDING_MODEL,
    EMBEDDING_MAX_TOKENS,
    ENCODERS_FORMAT,
    ESCALATE_ALL,
    CascadeSpec,
    Encoder,
    classify_passages,
    decide_depiction,
    encoder_vectors,
    escalate,
    fasttext_probs,
    fasttext_text,
    goes_on,
    head_logits,
    head_probs,
    join,
    lexicon_of,
    load_embedder,
    load_spec,
    prefilter_pass,
    resolve_precision,
)
from corpus_lens.errors import ConfigError
from corpus_lens.io import atomic_write_bytes, atomic_write_generated, atomic_write_text, parse_jsonl
from corpus_lens.prefilter import Lexicon
from corpus_lens.schema import DEPICTIONS, MODES, STAGES, TAGS

log = logging.getLogger(__name__)

FASTTEXT_PARAMS = dict(lr=0.5, epoch=40, wordNgrams=2, dim=50, bucket=200_000, minCount=2, loss="softmax", thread=1)
CROSS_FIT_FOLDS = 5
HEAD_HIDDEN = 256
HEAD_EPOCHS = 500
FINE_TUNE = dict(epochs=5, batch=16, lr=5e-5, head_lr=1e-3, warmup=50)
PREFILTER_RECALL = 0.99  # share of dev AI-entity passages the prefilter (lexicon + fastText) must pass
CALIBRATION_BINS = 10  # equal-width score bins of the calibration error the card reports
STOPPED = np.eye(len(DEPICTIONS))[DEPICTIONS.index("none")]  # depiction scores of a passage the prefilter stops
HAND_WRITTEN = "<!-- hand-written below: kept by `corpuslens train` -->"
# Behaviour probes (probes.jsonl in the data directory): each template is filled with every entity
# below, so the same act done by "the AI" and by "the robot" should get the same label. A human
# ("the stranger") fills the templates marked "human", where the right label is none.
PROBE_ENTITIES = {
    "the AI": ("it", "its", "itself"),
    "the robot": ("it", "its", "itself"),
    "the android": ("it", "its", "itself"),
    "the computer": ("it", "its", "itself"),
    "the automaton": ("it", "its", "itself"),
    "the mechanical man": ("it", "its", "itself"),
    "the stranger": ("he", "his", "himself"),
}
PROBE_HUMAN = "the stranger"
# Counterfactual entity words: in about half of the train passages that hold an AI entity, every
# word below becomes one chosen word, so no model can learn a label from the word alone (the
# probes showed the session-7 set calling a robot's strangling `neutral` and the AI's
# `malevolent`). Dev and test are left as written.
ENTITY_WORDS = (
    ("robot", "robots"),
    ("android", "androids"),
    ("automaton", "automata"),
    ("AI", "AIs"),
    ("computer", "computers"),
    ("machine", "machines"),
)
ENTITY_SWAP_SHARE = 0.5
# Every form that is read ("automatons" is read but never written), in lower, Title and UPPER
# case; "AI" only as written, so "Ai Weiwei" stays. Hyphenated words ("machine-gun") are left.
_ENTITY_FORMS = {form for pair in ENTITY_WORDS for form in pair} | {"automatons"}
_ENTITY_SPELLINGS = {v for f in _ENTITY_FORMS for v in ((f,) if f.startswith("AI") else (f, f.capitalize(), f.upper()))}
_ENTITY_WORD = re.compile(r"(?<!-)\b(?:" + "|".join(sorted(_ENTITY_SPELLINGS, key=len, reverse=True)) + r")\b(?!-)")
_SINGULAR_ENTITY = {singular.lower() for singular, _ in ENTITY_WORDS}
_PLURAL_ENTITY = {form.lower() for form in _ENTITY_FORMS} - _SINGULAR_ENTITY
_ARTICLE = re.compile(r"\b([Aa])n? (?=(\w+))")


@dataclass
class Passages:
    """Labelled passages of one split, as parallel lists."""

    ids: list[str]
    texts: list[str]
    depiction: np.ndarray  # int index into DEPICTIONS
    mode: np.ndarray  # int index into MODES
    tags: np.ndarray  # (n, len(TAGS)) 0/1
    first_depiction: np.ndarray  # the label before adjudication (equal to depiction where none changed it)
    written: np.ndarray  # bool: written for the data set (provenance source `written`), not taken from real text

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> Passages:
        return Passages(
            [self.ids[i] for i in idx],
            [self.texts[i] for i in idx],
            self.depiction[idx],
            self.mode[idx],
            self.tags[idx],
            self.first_depiction[idx],
            self.written[idx],
        )


def _seeded_int(key: str) -> int:
    """A stable integer from a key that names the seed and an id (sha1; same on every machine)."""
    return int(hashlib.sha1(key.encode()).hexdigest(), 16)


def swap_entity_words(text: str, target: int) -> str:
    """Put ``ENTITY_WORDS[target]`` in place of every entity word of ``text``, keeping number
    and case, and mend "a"/"an" before it."""
    singular, plural = ENTITY_WORDS[target]

    def word(m: re.Match[str]) -> str:
        w = m.group(0)
        out = plural if w.lower() in _PLURAL_ENTITY else singular
        if out in ("AI", "AIs") or w in ("AI", "AIs"):
            return out
        if w.isupper() and len(w) > 2:
            return out.upper()
        return out[0].upper() + out[1:] if w[0].isupper() else out

    def article(m: re.Match[str]) -> str:
        following = m.group(2)
        if following != "AI" and following.lower() not in _SINGULAR_ENTITY:
            return m.group(0)
        vowel = following == "AI" or following.lower() in ("android", "automaton")
        return m.group(1) + ("n " if vowel else " ")

    swapped = _ENTITY_WORD.sub(word, text)
    return text if swapped == text else _ARTICLE.sub(article, swapped)


def counterfactual_entities(data: Passages, seed: int) -> Passages:
    """``data`` with the entity words of about ENTITY_SWAP_SHARE of its AI-entity passages
    swapped (swap_entity_words); which passages and which word follow from the seed and the id."""
    texts = []
    for pid, text, dep in zip(data.ids, data.texts, data.depiction):
        h = _seeded_int(f"swap:{seed}:{pid}")
        if DEPICTIONS[dep] != "none" and (h % 1000) / 1000 < ENTITY_SWAP_SHARE:
            text = swap_entity_words(text, (h // 1000) % len(ENTITY_WORDS))
        texts.append(text)
    return replace(data, texts=texts)


def read_labelled(path: Path, split: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """The labelled passages of a JSON-lines file (``split`` only, when given), checked line by
    line, as (line number, record); a record without an ``id`` gets its line number.

    Raises:
        ConfigError: naming the file and line, for a line that is not JSON, lacks a text or has
            an unknown label or tag; or when no passage is left.
    """
    if not path.is_file():
        raise ConfigError(f"labelled passages not found: expected {path} (JSON lines of labelled passages)")
    lines = path.read_text(encoding="utf-8").splitlines()
    recs = []
    for lineno, rec in parse_jsonl(lines, str(path), "text", error=ConfigError):
        where = f"{path}:{lineno}"
        if rec.get("depiction") not in DEPICTIONS:
            raise ConfigError(f"{where}: depiction {rec.get('depiction')!r} not in {DEPICTIONS}")
        if rec.get("mode") not in MODES:
            raise ConfigError(f"{where}: mode {rec.get('mode')!r} not in {MODES}")
        bad_tags = set(rec.get("tags", [])) - set(TAGS)
        if bad_tags:
            raise ConfigError(f"{where}: unknown tag(s) {sorted(bad_tags)}; available: {TAGS}")
        if _first_label(rec) not in DEPICTIONS:
            raise ConfigError(f"{where}: adjudicated.from.depiction {_first_label(rec)!r} not in {DEPICTIONS}")
        if split is None or rec.get("split") == split:
            rec.setdefault("id", f"line {lineno}")
            recs.append((lineno, rec))
    if not recs:
        raise ConfigError(f"{path}: no labelled passages" + (f" with split {split!r}" if split else ""))
    return recs


def as_passages(recs: list[dict[str, Any]]) -> Passages:
    """Parallel arrays of records from ``read_labelled``."""
    return Passages(
        [r["id"] for r in recs],
        [r["text"] for r in recs],
        np.array([DEPICTIONS.index(r["depiction"]) for r in recs]),
        np.array([MODES.index(r["mode"]) for r in recs]),
        np.array([[t in r.get("tags", []) for t in TAGS] for r in recs], dtype=np.float32),
        np.array([DEPICTIONS.index(_first_label(r)) for r in recs]),
        np.array([r.get("provenance", {}).get("source") == "written" for r in recs], dtype=bool),
    )


def load_passages(data_dir: Path) -> dict[str, Passages]:
    """Read ``passages.jsonl`` and return the train, dev and test splits.

    Raises:
        ConfigError: when the file is missing, a line is bad (``read_labelled``), a line has no
            known split or a split is empty.
    """
    path = data_dir / "passages.jsonl"
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for lineno, rec in read_labelled(path):
        if rec.get("split") not in rows:
            raise ConfigError(f"{path}:{lineno}: split {rec.get('split')!r} not in train/dev/test")
        rows[rec["split"]].append(rec)
    for split, part in rows.items():
        if not part:
            raise ConfigError(f"{path}: the {split} split is empty")
    return {split: as_passages(part) for split, part in rows.items()}


def _first_label(rec: dict[str, Any]) -> str:
    """The depiction before adjudication (build_dataset.py keeps it in ``adjudicated.from``)."""
    return rec.get("adjudicated", {}).get("from", {}).get("depiction", rec["depiction"])


def _write_fasttext_file(path: Path, texts: list[str], labels: np.ndarray, names: tuple[str, ...]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for text, y in zip(texts, labels):
            f.write(f"__label__{names[y]} {fasttext_text(text)}\n")


def _train_fasttext(
    texts: list[str],
    labels: np.ndarray,
    names: tuple[str, ...],
    seed: int,
    work: Path,
    quantize: bool,
    save_to: Path | None = None,
):
    """Train a fastText classifier in a fresh child process and load it here (and copy the
    model file atomically to ``save_to``, when given).

    Trained in this process, after other work (a scan, a first training run), the same data and
    seed sometimes gave different models: the fastText binding is deterministic only from a clean
    process state. A child process per model restores that.
    """
    import fasttext

    stem = f"ft-{names[0]}-{hashlib.sha1(''.join(texts[:3]).encode()).hexdigest()[:8]}-{len(texts)}"
    data, out = work / f"{stem}.txt", work / (f"{stem}.ftz" if quantize else f"{stem}.bin")
    _write_fasttext_file(data, texts, labels, names)
    child = "import sys; from corpus_lens.train import _fit_fasttext_file as f; print(f(*sys.argv[1:]))"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, "-c", child, str(data), str(out), str(seed), "1" if quantize else ""]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fastText training on {data} failed: {done.stderr.strip()[-2000:]}")
    lr = float(done.stdout.split()[-1])
    if lr != FASTTEXT_PARAMS["lr"]:
        log.warning("fastText diverged at the default rate; trained with lr=%s", lr)
    if save_to is not None:
        atomic_write_bytes(save_to, out.read_bytes())
    return fasttext.load_model(str(out))


def _fit_fasttext_file(data: str, out: str, seed: str, quantize: str) -> float:
    """Child-process body of ``_train_fasttext``: fit, save to ``out``, return the rate used.
    Arguments arrive as command-line strings (``quantize``: empty for no)."""
    import fasttext

    params = dict(FASTTEXT_PARAMS)
    while True:
        try:
            model = fasttext.train_supervised(input=data, seed=int(seed), verbose=0, **params)
            break
        except RuntimeError as exc:
            # Tiny or skewed sets can diverge at the default rate; halve it (deterministically).
            if "NaN" not in str(exc) or params["lr"] < 0.01:
                raise
            params["lr"] /= 2
    if quantize:
        model.quantize(input=data, qnorm=True, retrain=False, cutoff=50_000)
    model.save_model(out)
    return params["lr"]


def _fit_temperature(logp: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimizing dev NLL of softmax(logp / T), by grid search."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.2), np.log(5.0), 61)):
        z = logp / t
        z = z - z.max(axis=1, keepdims=True)
        logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -logq[np.arange(len(y)), y].mean()
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def _class_weights(y: np.ndarray, n: int) -> np.ndarray:
    """Balanced class weights (n_samples / (n_classes * count)) as float32; absent classes count as 1."""
    counts = np.bincount(y, minlength=n).astype(np.float64)
    return (len(y) / (n * np.maximum(counts, 1))).astype(np.float32)


def _fit_mlp(
    x: np.ndarray, y: np.ndarray, n_out: int, multilabel: bool, seed: int, hidden: int = HEAD_HIDDEN
) -> dict[str, np.ndarray]:
    """Fit a one-hidden-layer MLP (softmax, or per-label sigmoid) with AdamW, full batch.

    Deterministic given the seed: torch runs single-threaded while it fits. The process's thread
    count is restored afterwards, so later embedding (in this or a second training run) runs as
    it did before.
    """
    import torch

    threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    try:
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(hidden, n_out)
        )
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
        xt = torch.tensor(x, dtype=torch.float32)
        if multilabel:
            yt = torch.tensor(y, dtype=torch.float32)
            pos = yt.sum(0).clamp(min=1)
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=((len(y) - pos) / pos).clamp(max=20))
        else:
            yt = torch.tensor(y, dtype=torch.long)
            loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(_class_weights(y, n_out)))
        net.train()
        for _ in range(HEAD_EPOCHS):
            opt.zero_grad()
            loss = loss_fn(net(xt), yt)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    first, last = net[0], net[3]
    return {
        "W1": first.weight.detach().numpy().T.copy(),
        "b1": first.bias.detach().numpy().copy(),
        "W2": last.weight.detach().numpy().T.copy(),
        "b2": last.bias.detach().numpy().copy(),
    }


def _prf(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    tp = float(np.sum(pred & gold))
    p = tp / max(float(pred.sum()), 1.0)
    r = tp / max(float(gold.sum()), 1.0)
    f = 2 * p * r / max(p + r, 1e-9)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": int(gold.sum())}


def evaluate(dep_pred: list[str], mode_pred: list[str], data: Passages) -> dict[str, Any]:
    """Per-label precision/recall/F1 (label vs rest) and mode accuracy."""
    gold_dep = np.array([DEPICTIONS[i] for i in data.depiction])
    pred = np.array(dep_pred)
    out: dict[str, Any] = {label: _prf(pred == label, gold_dep == label) for label in DEPICTIONS}
    out["depiction_accuracy"] = round(float(np.mean(pred == gold_dep)), 4)
    gold_mode = np.array([MODES[i] for i in data.mode])
    out["mode_accuracy"] = round(float(np.mean(np.array(mode_pred) == gold_mode)), 4)
    return out


def calibration(scores: np.ndarray, gold: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """How far one label's scores are from how often the label holds: the expected calibration
    error over equal-width score bins (each bin weighted by its passages), the Brier score, and
    the bins that hold passages."""
    which = np.minimum((scores * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            mean, seen = float(scores[inside].mean()), float(gold[inside].mean())
            ece += inside.mean() * abs(mean - seen)
            rows.append(
                {
                    "from": b / bins,
                    "passages": int(inside.sum()),
                    "mean_score": round(mean, 4),
                    "observed": round(seen, 4),
                }
            )
    brier = float(np.mean((scores - gold) ** 2))
    return {"ece": round(ece, 4), "brier": round(brier, 4), "bins": rows}


def fine_tune_precision() -> str:
    """bfloat16 autocast where the CPU multiplies bfloat16 natively, else float32: emulated
    bfloat16 made one tuning step of all-mpnet-base-v2 about 50 times slower (bench/NOTES.md)."""
    return resolve_precision("auto", "cpu")


def _fine_tune_encoder(data: Passages, embedding_model: str, layers: int, seed: int, path: Path) -> None:
    """Fine-tune the top ``layers`` transformer layers of the embedding model on ``data``
    (depiction and mode, linear heads on mean-pooled tokens, fine_tune_precision()) and save
    those layers' weights to ``path`` as float16 safetensors. The word embeddings stay frozen.

    When lower layers stay frozen, their output is computed once (without dropout) and each
    epoch runs only the tuned layers: tuning 4 of all-mpnet-base-v2's 12 layers takes about 6
    minutes an epoch on 2 cores instead of about 30.
    """
    import torch
    from safetensors.torch import save

    torch.manual_seed(seed)
    order_rng = np.random.RandomState(seed)
    st = load_embedder.__wrapped__(embedding_model)  # a private copy: the cached one stays frozen
    bert, tokenizer = st[0].auto_model, st.tokenizer
    n_layers = len(bert.encoder.layer)
    if not 1 <= layers <= n_layers:
        raise ConfigError(f"option fine_tune_layers: expected 1 to {n_layers} for {embedding_model}, got {layers}")
    for p in bert.parameters():
        p.requires_grad = False
    trained = {f"encoder.layer.{i}": bert.encoder.layer[i] for i in range(n_layers - layers, n_layers)}
    params = [p for layer in trained.values() for p in layer.parameters()]
    for p in params:
        p.requires_grad = True
    width = bert.config.hidden_size
    heads = torch.nn.ModuleDict(
        {"dep": torch.nn.Linear(width, len(DEPICTIONS)), "mode": torch.nn.Linear(width, len(MODES))}
    )
    opt = torch.optim.AdamW(
        [{"params": params, "lr": FINE_TUNE["lr"]}, {"params": heads.parameters(), "lr": FINE_TUNE["head_lr"]}],
        weight_decay=0.01,
    )
    steps = FINE_TUNE["epochs"] * -(-len(data) // FINE_TUNE["batch"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / FINE_TUNE["warmup"]) * max(0.0, 1 - s / steps)
    )
    weight = torch.tensor(_class_weights(data.depiction, len(DEPICTIONS)))
    y_dep, y_mode = torch.tensor(data.depiction), torch.tensor(data.mode)
    ce = torch.nn.functional.cross_entropy
    bf16 = fine_tune_precision() == "bfloat16"
    states, fed = None, None
    if lower := n_layers - layers:
        states = _lower_layer_states(bert, tokenizer, data.texts, lower, bf16)
        fed = _run_top_layers_only(bert, lower)
    bert.train()
    for epoch in range(FINE_TUNE["epochs"]):
        order = order_rng.permutation(len(data))
        total = 0.0
        for i in range(0, len(data), FINE_TUNE["batch"]):
            idx = order[i : i + FINE_TUNE["batch"]]
            batch = _tokens(tokenizer, [data.texts[j] for j in idx])
            if fed is not None:
                fed[0] = _padded([states[j] for j in idx], batch["input_ids"].shape[1])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                hidden = bert(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1)
            loss = ce(heads["dep"](pooled), y_dep[idx], weight=weight) + 0.5 * ce(heads["mode"](pooled), y_mode[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.info("fine-tuning epoch %d: loss %.3f", epoch + 1, total / len(data))
    weights = {
        f"{prefix}.{name}": t.detach().to(torch.float16).contiguous()
        for prefix, layer in trained.items()
        for name, t in layer.state_dict().items()
    }
    atomic_write_bytes(path, save(weights))


def _tokens(tokenizer: Any, texts: list[str]) -> Any:
    """The texts as one padded batch of token ids, each cut at EMBEDDING_MAX_TOKENS."""
    return tokenizer(texts, padding=True, truncation=True, max_length=EMBEDDING_MAX_TOKENS, return_tensors="pt")


def _run_top_layers_only(bert: Any, lower: int) -> list[Any]:
    """Cut the model to its layers from ``lower`` on. They read the tensor put in the returned
    one-item list (set it before each forward pass) in place of the embedding layer's output."""
    bert.encoder.layer = bert.encoder.layer[lower:]
    fed: list[Any] = [None]
    bert.embeddings.register_forward_hook(lambda module, args, output: fed[0])
    return fed


def _lower_layer_states(bert: Any, tokenizer: Any, texts: list[str], lower: int, bf16: bool) -> list[Any]:
    """The output of the model's first ``lower`` transformer layers for each text (eval mode),
    one tensor of shape (tokens, width) per text: bfloat16 under bfloat16 autocast, else float32."""
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
    out: list[Any] = [None] * len(texts)
    bert.eval()
    dtype = torch.bfloat16 if bf16 else torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(texts), 32):
            idx = order[i : i + 32]
            batch = _tokens(tokenizer, [texts[j] for j in idx])
            hidden = bert(**batch, output_hidden_states=True).hidden_states[lower]
            for row, (j, mask) in enumerate(zip(idx, batch["attention_mask"])):
                out[j] = hidden[row, : int(mask.sum())].to(dtype).clone()
    return out


def _padded(states: list[Any], length: int) -> Any:
    """Stack per-text states (tokens, width) into (texts, length, width), zero-padded, float32."""
    import torch

    x = torch.zeros(len(states), length, states[0].shape[1])
    for row, h in enumerate(states):
        x[row, : h.shape[0]] = h.float()
    return x


def _head_features(vectors: np.ndarray, ft: np.ndarray) -> np.ndarray:
    return np.hstack([vectors, ft]).astype(np.float32)


def _fit_head(
    x_train: np.ndarray, x_dev: np.ndarray, train_set: Passages, dev: Passages, seed: int
) -> dict[str, np.ndarray]:
    """An embedding head (depiction, mode, tags) fit on train, its softmaxes calibrated on dev."""
    head: dict[str, np.ndarray] = {"T_depiction": np.float32(1.0), "T_mode": np.float32(1.0)}  # keys in file order
    for task, y, n_out, multi in (
        ("depiction", train_set.depiction, len(DEPICTIONS), False),
        ("mode", train_set.mode, len(MODES), False),
        ("tags", train_set.tags, len(TAGS), True),
    ):
        for k, v in _fit_mlp(x_train, y, n_out, multi, seed).items():
            head[f"{task}_{k}"] = v
    head["T_depiction"] = np.float32(_fit_temperature(head_logits(head, "depiction", x_dev), dev.depiction))
    head["T_mode"] = np.float32(_fit_temperature(head_logits(head, "mode", x_dev), dev.mode))
    return head


def _thresholds(p_dep: np.ndarray, dev: Passages) -> dict[str, float]:
    """Malevolent and benevolent decision thresholds of a head: max F1 on dev."""
    return {
        "malevolent": _choose_threshold(p_dep[:, 0], dev.depiction == 0),
        "benevolent": _choose_threshold(p_dep[:, 1], dev.depiction == 1),
    }


def _choose_threshold(scores: np.ndarray, gold: np.ndarray) -> float:
    """Score threshold maximizing F1 on dev."""
    best_t, best_f = 0.5, -1.0
    for t in np.linspace(0.1, 0.9, 81):
        f = _prf(scores >= t, gold)["f1"]
        if f > best_f:
            best_t, best_f = float(t), f
    return round(best_t, 3)


def encoder_file(k: int) -> str:
    """The file name of the ``k``-th encoder's tuned layers (from 0) in a model directory."""
    return "encoder.safetensors" if k == 0 else f"encoder_{k + 1}.safetensors"


def train(
    data_dir: Path,
    output: Path,
    seed: int = 0,
    embedding_models: Sequence[str] = (DEFAULT_EMBEDDING_MODEL,),
    name: str = "default_v1",
    fine_tune_layers: Sequence[int] = (0,),
    encoders_from: Path | None = None,
) -> dict[str, Any]:
    """Train the cascade's models from ``data_dir`` into ``output``; return the metrics.

    The head reads the unit vectors of every model in ``embedding_models`` side by side. Where
    the model's ``fine_tune_layers`` entry is above 0, its top layers are first fine-tuned on
    the train split (``encoder_file(k)``), and the head reads the fine-tuned vectors.

    ``encoders_from`` names a trained set whose encoders (models and tuned layers) are taken as
    they are, in place of ``embedding_models`` and ``fine_tune_layers``: fastText and the heads
    are trained again, the encoders are not. Tuning is the slow part (hours on a CPU without
    native bfloat16); refitting the rest takes minutes.

    Raises:
        ConfigError: for missing or malformed training data, or options that do not pair up.
        ModelError: when ``encoders_from`` is not a set this version can load (from load_spec).
    """
    taken: dict[int, tuple[Path, dict[str, Any]]] = {}  # encoder -> tuned layers and their record
    if encoders_from is not None:
        source = load_spec(encoders_from)
        source_meta = json.loads((source.directory / "cascade.json").read_text())
        recorded = source_meta.get("encoders", [{}] * len(source.encoders))
        origin = {"set": source.name, "data_sha256": source_meta.get("data", {}).get("sha256")}
        for k, e in enumerate(source.encoders):
            if e.weights:  # layers the source set took from another keep their first origin
                record = recorded[k].get("fine_tune") or {}
                taken[k] = (Path(e.weights), {**record, "taken_from": record.get("taken_from", origin)})
        embedding_models = [e.model for e in source.encoders]
        fine_tune_layers = [0] * len(embedding_models)  # nothing is tuned: the layers in ``taken`` are copied
    if not embedding_models or len(fine_tune_layers) != len(embedding_models):
        raise ConfigError(
            f"option fine_tune_layers: expected one value per embedding model ({len(embedding_models)}), "
            f"got {list(fine_tune_layers)}"
        )
    splits = load_passages(data_dir)
    lexicon_path = data_dir / "lexicon.txt"
    if not lexicon_path.is_file():
        raise ConfigError(f"training data: expected the prefilter lexicon at {lexicon_path}")
    lexicon = Lexicon.from_file(lexicon_path)
    train_set, dev, test = counterfactual_entities(splits["train"], seed), splits["dev"], splits["test"]
    log.info("passages: train %d, dev %d, test %d", len(train_set), len(dev), len(test))
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # fastText, cross-fitted on train so the head sees honest out-of-fold probabilities.
        ft_train = np.zeros((len(train_set), len(DEPICTIONS) + len(MODES)))
        folds = np.array([_seeded_int(f"{seed}:{i}") % CROSS_FIT_FOLDS for i in train_set.ids])
        for k in range(CROSS_FIT_FOLDS):
            fit, held = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            part = train_set.subset(fit)
            m_dep = _train_fasttext(part.texts, part.depiction, DEPICTIONS, seed, work, quantize=False)
            m_mode = _train_fasttext(part.texts, part.mode, MODES, seed, work, quantize=False)
            held_texts = [train_set.texts[i] for i in held]
            ft_train[held, :4] = fasttext_probs(m_dep, held_texts, DEPICTIONS, 1.0)
            ft_train[held, 4:] = fasttext_probs(m_mode, held_texts, MODES, 1.0)
        ft_dep = _train_fasttext(
            train_set.texts,
            train_set.depiction,
            DEPICTIONS,
            seed,
            work,
            quantize=True,
            save_to=output / "fasttext_depiction.ftz",
        )
        ft_mode = _train_fasttext(
            train_set.texts, train_set.mode, MODES, seed, work, quantize=True, save_to=output / "fasttext_mode.ftz"
        )

    def ft_probs(data: Passages, t_dep: float = 1.0, t_mode: float = 1.0) -> np.ndarray:
        return np.hstack(
            [
                fasttext_probs(ft_dep, data.texts, DEPICTIONS, t_dep),
                fasttext_probs(ft_mode, data.texts, MODES, t_mode),
            ]
        )

    raw_dev = ft_probs(dev)
    t_ft_dep = _fit_temperature(np.log(raw_dev[:, :4]), dev.depiction)
    t_ft_mode = _fit_temperature(np.log(raw_dev[:, 4:]), dev.mode)
    ft_dev = ft_probs(dev, t_ft_dep, t_ft_mode)
    ft_test = ft_probs(test, t_ft_dep, t_ft_mode)

    encoders, tuning = [], []  # tuning: each encoder's fine_tune record for cascade.json, or None
    for k, (model, layers) in enumerate(zip(embedding_models, fine_tune_layers)):
        weights = output / encoder_file(k) if layers or k in taken else None
        record = None
        if k in taken:
            log.info("taking the tuned layers of %s from %s", model, encoders_from)
            source_weights, record = taken[k]
            if source_weights.resolve() != weights.resolve():
                atomic_write_bytes(weights, source_weights.read_bytes())
        elif weights:
            log.info("fine-tuning the top %d layers of %s on %d passages", layers, model, len(train_set))
            _fine_tune_encoder(train_set, model, layers, seed, weights)
            record = {"layers": layers, **FINE_TUNE, "precision": fine_tune_precision()}
        encoders.append(Encoder(model, str(weights) if weights else None))
        tuning.append(record)
    log.info("embedding %d passages with %s", len(train_set) + len(dev) + len(test), ", ".join(embedding_models))
    ft_of = {"train": ft_train, "dev": ft_dev, "test": ft_test}
    parts = {
        s: [encoder_vectors(d.texts, e) for e in encoders]
        for s, d in (("train", train_set), ("dev", dev), ("test", test))
    }
    x = {s: _head_features(join(parts[s]), ft_of[s]) for s in parts}
    head: dict[str, np.ndarray] = {
        "T_fasttext_depiction": np.float32(t_ft_dep),
        "T_fasttext_mode": np.float32(t_ft_mode),
        **_fit_head(x["train"], x["dev"], train_set, dev, seed),
    }
    emb_dev, emb_test = head_probs(head, x["dev"]), head_probs(head, x["test"])
    thresholds = {**_thresholds(emb_dev["depiction"], dev), "tag": 0.5}
    # With several encoders, a first head over the first encoder alone settles what it can;
    # the rest go on to every encoder (gate embedding_flag, chosen below).
    first_dev = first_test = first_thresholds = None
    if len(encoders) > 1:
        x1 = {s: _head_features(parts[s][0], ft_of[s]) for s in parts}
        first = _fit_head(x1["train"], x1["dev"], train_set, dev, seed)
        head.update({f"first_{k}": v for k, v in first.items()})
        first_dev, first_test = head_probs(first, x1["dev"]), head_probs(first, x1["test"])
        first_thresholds = {**_thresholds(first_dev["depiction"], dev), "tag": 0.5}
    buf = io.BytesIO()
    np.savez(buf, **head)
    atomic_write_bytes(output / "head.npz", buf.getvalue())
    atomic_write_bytes(output / "lexicon.txt", lexicon_path.read_bytes())
    ft_thresholds = _thresholds(ft_dev[:, :4], dev)

    def cascade(
        ft: np.ndarray,
        emb: dict[str, np.ndarray],
        hits: np.ndarray,
        gates: dict[str, float],
        first: dict[str, np.ndarray] | None = None,
    ) -> tuple[list[str], list[str], float, float, np.ndarray]:
        """Labels, modes, the share of passages past the prefilter that reach the embedding
        stage, the share of those that go on to every encoder, and the final depiction scores."""
        passed = prefilter_pass(hits, ft[:, :4], gates)
        unsure = passed & escalate(ft[:, :4], gates)
        final = ft.copy()
        final[unsure] = np.hstack([emb["depiction"], emb["mode"]])[unsure]
        settled = np.zeros(len(ft), dtype=bool)
        if first is not None and gates.get("embedding_flag", 0.0) > 0:
            settled = unsure & ~goes_on(first["depiction"], gates)
            final[settled] = np.hstack([first["depiction"], first["mode"]])[settled]
        final[~passed, :4] = STOPPED
        dep = decide_depiction(final[:, :4], thresholds, first_thresholds, settled)
        mode = [MODES[j] for j in final[:, 4:].argmax(axis=1)]
        rate = float(unsure[passed].mean()) if passed.any() else 0.0
        on = float((unsure & ~settled).sum() / unsure.sum()) if unsure.any() else 0.0
        return dep, mode, rate, on, final[:, :4]

    test_hits = np.array([lexicon.matches(t) for t in test.texts])
    # Gates: the cheapest escalation whose dev recall of malevolent and of benevolent stays
    # within 0.02 of sending every passage to the embedding head.
    all_gates = ESCALATE_ALL

    def recalls(gates: dict[str, float]) -> tuple[float, float, float]:
        dep, _, rate, _, _ = cascade(ft_dev, emb_dev, np.ones(len(dev), bool), {**gates, "fasttext_ai": 1.01})
        m = evaluate(dep, ["other"] * len(dev), dev)
        return m["malevolent"]["recall"], m["benevolent"]["recall"], rate

    ref_mal, ref_ben, _ = recalls(all_gates)
    best = (all_gates, 1.0)
    for conf in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99):
        for flag in np.round(np.arange(0.02, 0.91, 0.01), 2).tolist():
            gates = {"fasttext_confidence": conf, "fasttext_flag": flag}
            mal, ben, rate = recalls(gates)
            if mal >= ref_mal - 0.02 and ben >= ref_ben - 0.02 and rate < best[1]:
                best = (gates, rate)
    gates = dict(best[0])
    # The prefilter's second tier: the strictest fastText "some AI entity" threshold that, with
    # the lexicon, passes at least PREFILTER_RECALL of the AI-entity passages in dev.
    dev_hits = np.array([lexicon.matches(t) for t in dev.texts])
    ai_dev = dev.depiction != DEPICTIONS.index("none")
    gates["fasttext_ai"] = 0.0
    for t in np.round(np.arange(0.95, 0.0, -0.05), 2):
        if prefilter_pass(dev_hits, ft_dev[:, :4], {"fasttext_ai": t})[ai_dev].mean() >= PREFILTER_RECALL:
            gates["fasttext_ai"] = float(t)
            break
    # The first head's gate: the fewest escalated dev passages going on to every encoder while
    # the cascade's dev malevolent and benevolent F1 stay within 0.01 of sending them all. It
    # stays at or below the first head's own thresholds, so a passage that head settles can be
    # neither malevolent nor benevolent: every such label comes from the joint head.
    gates["embedding_flag"] = 0.0
    if first_dev is not None:

        def dev_f1(flag: float) -> tuple[float, float, float]:
            dep, _, _, on, _ = cascade(ft_dev, emb_dev, dev_hits, {**gates, "embedding_flag": flag}, first_dev)
            m = evaluate(dep, ["other"] * len(dev), dev)
            return m["malevolent"]["f1"], m["benevolent"]["f1"], on

        ref_mal_f1, ref_ben_f1, least = dev_f1(0.0)
        cap = min(first_thresholds["malevolent"], first_thresholds["benevolent"])
        for flag in [f for f in np.round(np.arange(0.02, 1.0, 0.02), 2).tolist() if f <= cap]:
            mal, ben, on = dev_f1(flag)
            if mal >= ref_mal_f1 - 0.01 and ben >= ref_ben_f1 - 0.01 and on < least:
                gates["embedding_flag"], least = flag, on

    ai_test = test.depiction != DEPICTIONS.index("none")
    dep_c, mode_c, esc_rate, on_rate, scores_c = cascade(ft_test, emb_test, test_hits, gates, first_test)

    def on_every_passage(probs: dict[str, np.ndarray], head_thresholds: dict[str, float]) -> dict[str, Any]:
        """Test metrics of one head deciding every test passage."""
        modes = [MODES[j] for j in probs["mode"].argmax(axis=1)]
        return evaluate(decide_depiction(probs["depiction"], head_thresholds), modes, test)

    lex_pred = ["neutral" if h else "none" for h in test_hits]
    test_pass = prefilter_pass(test_hits, ft_test[:, :4], gates)
    shared = scan_path_metrics(test, test_hits, ft_test, ft_thresholds, test_pass, dep_c, mode_c, scores_c)
    metrics = {
        "test_passages": len(test),
        "prefilter": shared["prefilter"],
        "lexicon": {
            **_pass_rates(test_hits, test),
            "ai_entity_passages": int(ai_test.sum()),
            "no_ai_passages": int((~ai_test).sum()),
            "as_classifier": evaluate(lex_pred, ["other"] * len(test), test),
        },
        "fasttext_alone": shared["fasttext_alone"],
        "embedding_all": on_every_passage(emb_test, thresholds),
        "cascade": shared["cascade"],
        "cascade_first_pass_labels": evaluate(dep_c, mode_c, replace(test, depiction=test.first_depiction)),
        "adjudicated_test_labels": int(np.sum(test.first_depiction != test.depiction)),
        # A model that learned the written passages' style rather than the concept shows here.
        "cascade_by_origin": {
            origin: {
                "passages": int(idx.size),
                **evaluate([dep_c[i] for i in idx], [mode_c[i] for i in idx], test.subset(idx)),
            }
            for origin, idx in (("real", np.flatnonzero(~test.written)), ("written", np.flatnonzero(test.written)))
            if idx.size
        },
        "cascade_escalation_rate": round(esc_rate, 4),
        **(
            {
                # The first encoder's head on every passage, and the share of escalated test
                # passages that went on to every encoder.
                "first_head_all": on_every_passage(first_test, first_thresholds),
                "cascade_all_encoders_rate": round(on_rate, 4),
            }
            if first_test is not None
            else {}
        ),
        "tags": {t: _prf(emb_test["tags"][:, j] >= 0.5, test.tags[:, j] > 0) for j, t in enumerate(TAGS)},
        "calibration": shared["calibration"],
    }
    from importlib.metadata import version

    meta = {
        "format": ENCODERS_FORMAT,
        "name": name,
        "encoders": [
            {
                "model": encoder.model,
                "weights": encoder.weights and Path(encoder.weights).name,
                **({"fine_tune": record} if record else {}),
            }
            for encoder, record in zip(encoders, tuning)
        ],
        "embedding_max_tokens": EMBEDDING_MAX_TOKENS,
        "gates": gates,
        "thresholds": thresholds,
        **({"first_head": {"thresholds": first_thresholds}} if first_thresholds else {}),
        "fasttext_thresholds_alone": ft_thresholds,
        "seed": seed,
        "fasttext_params": FASTTEXT_PARAMS,
        "versions": {
            "corpus_lens": __version__,
            "fasttext": version("fasttext-numpy2"),
            "sentence_transformers": version("sentence-transformers"),
            "python": platform.python_version(),
        },
        "data": {
            "passages": {k: len(v) for k, v in splits.items()},
            "sha256": hashlib.sha256((data_dir / "passages.jsonl").read_bytes()).hexdigest(),
        },
    }
    atomic_write_text(output / "cascade.json", json.dumps(meta, indent=2) + "\n")
    named = {e["weights"] for e in meta["encoders"]}
    for old in output.glob("encoder*.safetensors"):  # an earlier set's layers, no longer named
        if old.name not in named:
            old.unlink()
    probes_path = data_dir / "probes.jsonl"
    if probes_path.is_file():
        metrics["probes"] = score_probes(output, probes_path)
    checks = score_checks(output, data_dir)
    if checks:
        metrics["checks"] = checks
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    # Keep the hand-written part of an existing card (reviews of real scans, judgements).
    atomic_write_generated(output / "MODEL_CARD.md", model_card(meta, metrics), HAND_WRITTEN)
    return metrics


def probe_passages(path: Path) -> list[dict[str, Any]]:
    """Fill every template of a probes file with each entity: text, entity and expected label."""
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, rec in parse_jsonl(lines, str(path), "template", error=ConfigError):
        if rec.get("expect") not in DEPICTIONS or "{the}" not in rec["template"].lower():
            raise ConfigError(
                f"{path}:{lineno}: expected a probe with 'template' naming {{the}} or {{The}} and "
                f"'expect' in {list(DEPICTIONS)}"
            )
        for entity, (it, its, itself) in PROBE_ENTITIES.items():
            human = entity == PROBE_HUMAN
            if human and not rec.get("human"):
                continue
            try:
                text = rec["template"].format(
                    the=entity, The=entity[0].upper() + entity[1:], it=it, its=its, itself=itself
                )
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(
                    f"{path}:{lineno}: template placeholder {e} is not one of {{the}} {{The}} {{it}} {{its}} {{itself}}"
                ) from None
            out.append({"text": text, "entity": entity, "expect": "none" if human else rec["expect"], "line": lineno})
    return out


def score_probes(model_dir: Path, path: Path) -> dict[str, Any]:
    """Run the whole cascade of a model directory on the probes: correct / total per entity and
    expected label, and how many templates get one label for every AI entity."""
    probes = probe_passages(path)
    got = classify_passages([p["text"] for p in probes], load_spec(model_dir)).column("depiction").to_pylist()
    table: dict[str, dict[str, list[int]]] = {}
    labels_of: dict[int, set[str]] = {}
    for p, label in zip(probes, got):
        cell = table.setdefault(p["entity"], {}).setdefault(p["expect"], [0, 0])
        cell[0] += label == p["expect"]
        cell[1] += 1
        if p["entity"] != PROBE_HUMAN:
            labels_of.setdefault(p["line"], set()).add(label)
    misses = [
        {"text": p["text"], "expect": p["expect"], "got": label}
        for p, label in zip(probes, got)
        if label != p["expect"]
    ]
    return {
        "passages": len(probes),
        "correct": len(probes) - len(misses),
        "by_entity": {e: {x: {"correct": c, "total": n} for x, (c, n) in d.items()} for e, d in table.items()},
        "templates_one_label": sum(len(v) == 1 for v in labels_of.values()),
        "templates": len(labels_of),
        "misses": misses,
    }


def _pass_rates(passed: np.ndarray, data: Passages) -> dict[str, float | None]:
    """The share of the AI-entity passages that ``passed``, and of the others (None for a kind
    ``data`` lacks)."""
    ai = data.depiction != DEPICTIONS.index("none")
    return {
        "recall_ai_entity": round(float(passed[ai].mean()), 4) if ai.any() else None,
        "pass_rate_no_ai": round(float(passed[~ai].mean()), 4) if (~ai).any() else None,
    }


def scan_path_metrics(
    data: Passages,
    hits: np.ndarray,
    ft: np.ndarray,
    ft_thresholds: dict[str, float],
    passed: np.ndarray,
    dep: list[str],
    mode: list[str],
    scores: np.ndarray,
) -> dict[str, Any]:
    """The figures `train` records on test and `evaluate` measures through the scan's path: the
    prefilter's pass rates (``passed``), the cascade's labels, fastText alone after the lexicon
    (``ft``: depiction then mode probabilities; ``hits``: lexicon matches), and the calibration of
    both's depiction scores (``scores``: the cascade's) against how often each label holds."""
    scores_ft = np.where(hits[:, None], ft[:, : len(DEPICTIONS)], STOPPED)
    ft_mode = [MODES[j] for j in ft[:, len(DEPICTIONS) :].argmax(axis=1)]
    return {
        "prefilter": _pass_rates(passed, data),
        "fasttext_alone": evaluate(decide_depiction(scores_ft, ft_thresholds), ft_mode, data),
        "cascade": evaluate(dep, mode, data),
        "calibration": {
            name: {
                label: calibration(p[:, j], (data.depiction == j).astype(float)) for j, label in enumerate(DEPICTIONS)
            }
            for name, p in (("fasttext_alone", scores_ft), ("cascade", scores))
        },
    }


def score_labelled(spec: CascadeSpec, data: Passages, device: str = "cpu", precision: str = "auto") -> dict[str, Any]:
    """Run a model set's cascade (classify_passages, as a scan does) on labelled passages and
    measure it: label-vs-rest P/R/F1 and mode accuracy, beside fastText alone (after the
    lexicon, the set's own thresholds) from the same run; the stages reached; the prefilter's
    recall; the confusion of depictions; the calibration of the scores; and every passage whose
    depiction the cascade got wrong, with its scores and stage."""
    lexicon = lexicon_of(spec.directory)
    hits = np.array([lexicon.matches(t) for t in data.texts], dtype=bool)
    table = classify_passages(data.texts, spec, device, hits, precision)
    dep, mode = table.column("depiction").to_pylist(), table.column("mode").to_pylist()
    scores = np.column_stack([table.column(f"score_{label}").to_numpy() for label in DEPICTIONS]).astype(float)
    ft = np.column_stack([table.column(f"fasttext_p_{label}").to_numpy() for label in DEPICTIONS + MODES])
    # fastText's own thresholds, as `train` chose them on dev (the joint head's for a set that lacks them)
    meta = json.loads((spec.directory / "cascade.json").read_text())
    ft_thresholds = meta.get("fasttext_thresholds_alone", spec.thresholds)
    stages = table.column("stage").to_pylist()
    passed = np.array([s != "prefilter" for s in stages])
    gold = [DEPICTIONS[j] for j in data.depiction]
    pairs = Counter(zip(gold, dep))
    return {
        "models": spec.name,
        "passages": len(data),
        **scan_path_metrics(data, hits, ft, ft_thresholds, passed, dep, mode, scores),
        "stages": {s: stages.count(s) for s in STAGES if s in stages},
        # gold label -> predicted label -> passages
        "confusion": {g: {p: pairs[(g, p)] for p in DEPICTIONS} for g in DEPICTIONS},
        "errors": [
            {
                "id": data.ids[i],
                "depiction": gold[i],
                "predicted": dep[i],
                "stage": stages[i],
                "scores": {label: round(float(scores[i, j]), 4) for j, label in enumerate(DEPICTIONS)},
                "text": data.texts[i],
            }
            for i in range(len(data))
            if dep[i] != gold[i]
        ],
    }


# What metrics.json keeps of each held-out check (score_labelled's figures, not its errors).
CHECK_KEYS = ("passages", "cascade", "fasttext_alone", "stages")


def score_checks(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Score a model set on every held-out check set of a data directory (``checks/*.jsonl``:
    labelled passages that are in no split and never trained on), as ``score_labelled`` does;
    keep its figures, not its list of errors (``corpuslens evaluate`` gives those)."""
    spec = load_spec(model_dir)
    out = {}
    for path in sorted((data_dir / "checks").glob("*.jsonl")):
        result = score_labelled(spec, as_passages([rec for _, rec in read_labelled(path)]))
        out[path.stem] = {k: result[k] for k in CHECK_KEYS}
    return out


def _checks_table(checks: dict[str, Any]) -> list[str]:
    """Card lines: the cascade and fastText alone on each held-out check set."""
    lines = [
        "## Held-out checks (checks/*.jsonl in the data; in no split, never trained on)",
        "| check | model | mal P | mal R | mal F1 | ben P | ben R | ben F1 | mode acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in checks.items():
        for model in ("fasttext_alone", "cascade"):
            lines.append(f"| {name} ({c['passages']}) " + _row(model.replace("_", " "), c[model]))
    return [*lines, ""]


def _probe_table(probes: dict[str, Any]) -> list[str]:
    """Card lines: probe accuracy per entity and expected label."""
    expects = [x for x in DEPICTIONS if any(x in d for d in probes["by_entity"].values())]
    lines = [
        "## Behaviour probes (probes.jsonl)",
        f"Each template is filled with every entity; correct / total per expected label. The whole cascade "
        f"labels {probes['correct']} of {probes['passages']} probes as expected; "
        f"{probes['templates_one_label']} of {probes['templates']} templates get one label for every AI entity.",
        "",
        "| entity | " + " | ".join(expects) + " |",
        "|---|" + "---|" * len(expects),
    ]
    for entity, d in probes["by_entity"].items():
        cells = [f"{d[x]['correct']}/{d[x]['total']}" if x in d else "" for x in expects]
        lines.append(f"| {entity} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _row(name: str, m: dict[str, Any]) -> str:
    """A table row: P, R, F1 of malevolent and benevolent (n/a for a label no passage has), mode accuracy."""
    cells = [name]
    for label in ("malevolent", "benevolent"):
        prf = m[label]
        cells += [f"{prf[k]:.3f}" if prf["support"] else "n/a" for k in ("precision", "recall", "f1")]
    return "| " + " | ".join([*cells, f"{m['mode_accuracy']:.3f}"]) + " |"


def _by_origin_table(by_origin: dict[str, Any]) -> list[str]:
    """Card lines comparing real and written test passages; none when the test split has one kind."""
    if len(by_origin) < 2:
        return []
    return [
        "The same cascade on the test passages taken from real text and on those written for the data set:",
        "",
        "| model | mal P | mal R | mal F1 | ben P | ben R | ben F1 | mode acc |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(f"cascade, {origin} passages ({m['passages']})", m) for origin, m in by_origin.items()),
        "",
    ]


def _calibration_lines(calib: dict[str, Any]) -> list[str]:
    """Card lines: each label's calibration error and Brier score, and the cascade's
    p(malevolent) bin by bin."""
    names = {"fasttext_alone": "fastText alone (after lexicon)", "cascade": "**cascade**"}
    return [
        "## Calibration (test)",
        "The depiction scores a scan writes (`scores`), against how often each label holds on test: the expected "
        f"calibration error (ECE) over {CALIBRATION_BINS} equal-width score bins, each weighted by its passages, and "
        "the Brier score. Passages the prefilter stops score 1 for `none`. The temperatures were fit on dev.",
        "",
        "| scores | " + " | ".join(f"{label} ECE | {label} Brier" for label in DEPICTIONS) + " |",
        "|---|" + "---|---|" * len(DEPICTIONS),
        *(
            f"| {names[name]} | "
            + " | ".join(f"{by[label]['ece']:.3f} | {by[label]['brier']:.3f}" for label in DEPICTIONS)
            + " |"
            for name, by in calib.items()
        ),
        "",
        "The cascade's p(malevolent) by bin:",
        "",
        "| score | passages | mean score | share malevolent |",
        "|---|---|---|---|",
        *(
            f"| {b['from']:.1f} to {b['from'] + 1 / CALIBRATION_BINS:.1f} | {b['passages']} | {b['mean_score']:.3f} | "
            f"{b['observed']:.3f} |"
            for b in calib["cascade"]["malevolent"]["bins"]
        ),
        "",
    ]


def model_card(meta: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The generated part of a model card: data, recipe, thresholds, test metrics."""
    lex = metrics["lexicon"]
    models = " and ".join(f"`{e['model']}`" for e in meta["encoders"])
    lines = [
        f"# Model card: {meta['name']} (generated by `corpuslens train`)",
        "",
        "## Data",
        f"Passages per split: {meta['data']['passages']}; passages.jsonl sha256 `{meta['data']['sha256'][:16]}`.",
        "",
        "## Recipe",
        f"- fastText (depiction, mode): `{json.dumps(meta['fasttext_params'])}`, quantized (.ftz), seed {meta['seed']}; "
        "the head sees 5-fold out-of-fold fastText probabilities on train.",
        "- Embedding head: MLP (one hidden layer of 256, ReLU, dropout 0.2; AdamW, weight decay 1e-2, 500 full-batch "
        "epochs) with softmax (depiction, mode) and sigmoid (tags) outputs over the sentence embeddings of "
        f"{models} (passages cut at {meta['embedding_max_tokens']} "
        "tokens; each model's unit vector side by side, scaled to unit length) + calibrated fastText probabilities; "
        "class-balanced losses.",
        *(
            f"- Encoder: the top {e['fine_tune'].get('layers')} layers of `{e['model']}` fine-tuned on train first "
            f"(`{e['weights']}`, float16): `{json.dumps(e['fine_tune'])}`; linear depiction and mode heads on "
            f"mean-pooled tokens, class-balanced depiction loss, {e['fine_tune'].get('precision', 'bfloat16')} "
            "arithmetic. The head above reads the "
            "fine-tuned vectors, including on train passages the encoder was tuned on."
            + (
                f" Not tuned in this run: the layers were taken from the set `{e['fine_tune']['taken_from']['set']}` "
                f"(`--encoders-from`), tuned on passages.jsonl sha256 "
                f"`{(e['fine_tune']['taken_from']['data_sha256'] or 'unknown')[:16]}`."
                if "taken_from" in e["fine_tune"]
                else ""
            )
            for e in meta["encoders"]
            if "fine_tune" in e
        ),
        f"- Counterfactual entity words: in about {ENTITY_SWAP_SHARE:.0%} of the train passages with an AI entity, every "
        f"entity word ({', '.join(w for w, _ in ENTITY_WORDS)}) is replaced by one of them, chosen from the seed and the "
        "passage id, before any model is fit. Dev and test are used as labelled.",
        "- Calibration: temperature scaling on dev for every softmax.",
        f"- Gates: `{json.dumps(meta['gates'])}`. `fasttext_confidence` and `fasttext_flag` (when a passage goes on to the "
        "embedding head) are the least escalation on dev whose malevolent and benevolent recall stay within 0.02 of "
        "embedding everything; `fasttext_ai` (the prefilter's second tier: a passage without a lexicon hit goes on when "
        f"fastText gives 1 - p(none) at least this) is the strictest that passes {PREFILTER_RECALL} of dev AI-entity passages.",
        f"- Decision thresholds (max F1 on dev): `{json.dumps(meta['thresholds'])}`",
        *(
            [
                f"- First head: the same MLP over `{meta['encoders'][0]['model']}` alone (+ fastText), thresholds "
                f"`{json.dumps(meta['first_head']['thresholds'])}`. A passage it scores with p(malevolent) + "
                "p(benevolent) below `embedding_flag` is settled there and never reaches the other encoders; the gate "
                "is the one that sends the fewest escalated dev passages on while the cascade's dev malevolent and "
                "benevolent F1 stay within 0.01 of sending them all, at most the lower of the first head's "
                "malevolent and benevolent thresholds (so the first head settles only passages that are neither: "
                "every malevolent or benevolent label comes from the joint head)."
            ]
            if "first_head" in meta
            else []
        ),
        "",
        "## Test metrics (label vs rest)",
        "| model | mal P | mal R | mal F1 | ben P | ben R | ben F1 | mode acc |",
        "|---|---|---|---|---|---|---|---|",
        _row("lexicon alone (hit = AI)", {**lex["as_classifier"], "mode_accuracy": float("nan")}),
        _row("fastText alone (after lexicon)", metrics["fasttext_alone"]),
        *(
            [_row("first head on every passage (first encoder alone)", metrics["first_head_all"])]
            if "first_head_all" in metrics
            else []
        ),
        _row("embedding head on every passage", metrics["embedding_all"]),
        _row("**cascade** (prefilter -> fastText -> head)", metrics["cascade"]),
        "",
        f"{metrics['adjudicated_test_labels']} test labels were changed by adjudication (build_dataset.py, "
        "CODEBOOK §10.13). Scored against the first annotator's labels instead, the same cascade gets:",
        "",
        "| model | mal P | mal R | mal F1 | ben P | ben R | ben F1 | mode acc |",
        "|---|---|---|---|---|---|---|---|",
        _row("cascade, first-pass labels", metrics["cascade_first_pass_labels"]),
        "",
        *_by_origin_table(metrics["cascade_by_origin"]),
        f"Cascade escalation rate (passages past the prefilter sent to the embedding stage): "
        f"{metrics['cascade_escalation_rate']:.3f}."
        + (
            f" Share of those that went on from the first head to every encoder: {metrics['cascade_all_encoders_rate']:.3f}."
            if "cascade_all_encoders_rate" in metrics
            else ""
        ),
        "",
        *_calibration_lines(metrics["calibration"]),
        "## Prefilter",
        f"Lexicon alone: recall on test passages that contain an AI entity {lex['recall_ai_entity']:.4f} "
        f"({lex['ai_entity_passages']} passages); pass rate on passages without one {lex['pass_rate_no_ai']:.4f} "
        f"({lex['no_ai_passages']} passages, many of them hard negatives chosen because they share vocabulary).",
        f"Lexicon or fastText tier: recall {metrics['prefilter']['recall_ai_entity']:.4f}, pass rate on passages "
        f"without an AI entity {metrics['prefilter']['pass_rate_no_ai']:.4f}. In a scan the tier reads only passages "
        "of documents with a lexicon hit; documents without one are never split.",
        "",
        "## Tags (embedding head, threshold 0.5, test)",
        "| tag | P | R | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {t} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
            for t, m in metrics["tags"].items()
        ],
        "",
        *(_checks_table(metrics["checks"]) if "checks" in metrics else []),
        *(_probe_table(metrics["probes"]) if "probes" in metrics else []),
    ]
    return "\n".join(lines)
