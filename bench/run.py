"""`make bench`: corpus_lens side by side with what a user would pick instead.

Reads the shared web shards (../shared/data/web, 124 MB of text); this is the only part of
the project besides the training recipes that needs ../shared. Every comparison is measured in
the same run, each figure the median of RUNS runs with min and max, and reported as a ratio
against its baseline. Results: bench/results.json and bench/results.md for the default set,
bench/results-<set>.* for another (--models).

Usage: python bench/run.py [--models default_v1] [--shared ../shared/data] [--runs 3] [--scan-runs 1]
                           [--skip-peer]
       python bench/run.py --only-embedding --results OUT/results-gpu   (GPU machine: rows 4c-4f)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus_lens.classify import (
    ESCALATE_ALL,
    SHIPPED_SETS,
    CascadeSpec,
    classify_passages,
    embed,
    furthest_stage,
    load_spec,
)
from corpus_lens.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEER_VENV = ROOT / "bench" / "work" / "peer-venv"


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def text_mb(shards: list[Path]) -> float:
    total = 0
    for s in shards:
        for b in pq.ParquetFile(s).iter_batches(8192, columns=["text"]):
            total += pc.sum(pc.binary_length(b.column(0))).as_py() or 0
    return total / 1e6


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def floor_read(shards: list[Path]) -> float:
    start = time.perf_counter()
    n = 0
    for s in shards:
        for b in pq.ParquetFile(s).iter_batches(8192, columns=["text"]):
            n += len(b)
    return time.perf_counter() - start


def on_cores(n: int) -> list[str]:
    """Command prefix that confines a process tree to the first ``n`` cores."""
    return ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:n])]


def run_scan(inputs: list[Path], workers: int, out: Path, models: Path) -> tuple[float, int]:
    """Wall time of a whole `corpuslens scan` with the model set ``models`` on ``workers`` cores
    (one worker per core) and the peak RSS (KB) of its process tree."""
    cmd = [
        *on_cores(workers),
        str(BIN / "corpuslens"),
        "scan",
        *map(str, inputs),
        "--output",
        str(out),
        "--overwrite",
        "--workers",
        str(workers),
        "--models",
        str(models),
    ]
    # A fresh parent per scan, so that its RUSAGE_CHILDREN peak covers this scan's processes only.
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode); "
        "sys.stderr.write(p.stderr[-2000:] if p.returncode else '')"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    elapsed, peak_kb, rc = proc.stdout.split()
    if rc != "0":
        raise SystemExit(f"scan failed: {proc.stderr}")
    return float(elapsed), int(peak_kb)


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Confine this process to one core and torch to one thread for the duration."""
    import torch

    cores = os.sched_getaffinity(0)
    threads = torch.get_num_threads()
    os.sched_setaffinity(0, set(sorted(cores)[:1]))
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


def escalate_all(spec: CascadeSpec) -> CascadeSpec:
    """The cascade's own code path with every passage escalated to the embedding head."""
    gates = {**spec.gates, **ESCALATE_ALL, "fasttext_ai": 0.0}
    return dataclasses.replace(spec, gates=gates)


def naive_embedding(sample: list[str], spec: CascadeSpec) -> float:
    """Seconds to embed ``sample`` and run the head on one core (torch on one thread, this
    process pinned to one core for the timing)."""
    spec = escalate_all(spec)
    everything = np.ones(len(sample), dtype=bool)
    classify_passages(sample[:4], spec, lexicon_hits=everything[:4])  # load models outside the timing
    with one_core():
        start = time.perf_counter()
        table = classify_passages(sample, spec, lexicon_hits=everything)
        elapsed = time.perf_counter() - start
    assert table.column("stage").to_pylist() == [furthest_stage(spec)] * len(sample)
    return elapsed


def embedding_time(sample: list[str], device: str, spec: CascadeSpec) -> float:
    """Seconds for the cascade's embedding stage alone (its model, tuned layers and token cut)
    on ``sample``; on the CPU pinned to one core and one torch thread, on a GPU with one host
    core."""

    def run(texts: list[str]) -> np.ndarray:
        return embed(texts, spec.encoders, device, max_tokens=spec.embedding_max_tokens, precision="auto")

    run(sample[:32])  # load and warm up outside the timing
    with one_core():
        start = time.perf_counter()
        vectors = run(sample)
        elapsed = time.perf_counter() - start
    assert vectors.shape[0] == len(sample)
    return elapsed


def device_agreement(spec: CascadeSpec, data_dir: Path, device: str) -> dict[str, float]:
    """The whole cascade on the labelled test split on the CPU and on ``device``: how often the
    labels agree, the largest score difference, and malevolent/benevolent F1 on each."""
    from corpus_lens.schema import SCORE_COLUMNS
    from corpus_lens.train import evaluate, load_passages

    test = load_passages(data_dir)["test"]
    runs = {d: classify_passages(test.texts, escalate_all(spec), d) for d in ("cpu", device)}
    cpu, other = runs["cpu"], runs[device]
    out: dict[str, float] = {"passages": len(test)}
    for column in ("depiction", "mode"):
        a, b = cpu.column(column).to_pylist(), other.column(column).to_pylist()
        out[f"{column}_agree"] = sum(x == y for x, y in zip(a, b)) / len(a)
    out["max_score_diff"] = max(
        float(np.max(np.abs(cpu.column(c).to_numpy() - other.column(c).to_numpy()))) for c in SCORE_COLUMNS
    )
    for name, table in (("cpu", cpu), (device, other)):
        metrics = evaluate(table.column("depiction").to_pylist(), table.column("mode").to_pylist(), test)
        for label in ("malevolent", "benevolent"):
            out[f"{name}_{label}_f1"] = metrics[label]["f1"]
    return {k: round(v, 4) for k, v in out.items()}


def minhash_pair(texts: list[str]) -> tuple[float, float]:
    import xxhash
    from datasketch import MinHash

    from corpus_lens.dedup import DedupSettings, shingles, signatures

    s = DedupSettings()
    start = time.perf_counter()
    for t in texts:
        m = MinHash(num_perm=s.num_perm, seed=s.seed, hashfunc=xxhash.xxh32_intdigest)
        for sh in shingles(t, s.ngram):
            m.update(sh)
    naive = time.perf_counter() - start
    start = time.perf_counter()
    signatures(texts, s)
    return naive, time.perf_counter() - start


def cluster_time(n: int) -> float:
    from corpus_lens.dedup import DedupSettings, cluster

    s = DedupSettings()
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(n, s.num_perm), dtype=np.uint32)
    sigs[1::10] = sigs[0::10][: len(sigs[1::10])]  # a tenth are exact copies
    ids = [f"p{i:07d}" for i in range(n)]
    start = time.perf_counter()
    cluster(ids, sigs, s)
    return time.perf_counter() - start


def peer_available() -> bool:
    """The peer's own environment, installed on first use (datatrove is not a project dependency)."""
    python = PEER_VENV / "bin" / "python"
    probe = "import datatrove.pipeline.filters, fasttext, regex, fasteners"
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
        return True
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_VENV / "bin" / "pip"), "install", "--quiet"]
    ok = subprocess.run(
        [*pip, "datatrove==0.10.1", "regex", "fasteners", "fasttext-numpy2-wheel", "numpy==2.4.6", "pyarrow==26.0.1"],
        capture_output=True,
    )
    return ok.returncode == 0


def peer_run(shards: list[Path], model: Path, work: Path) -> float:
    script = ROOT / "bench" / "peer_datatrove.py"
    start = time.perf_counter()
    proc = subprocess.run(
        [*on_cores(1), str(PEER_VENV / "bin" / "python"), str(script), str(shards[0].parent), str(model), str(work)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--models", default=SHIPPED_SETS[0], help=f"model set: a shipped name ({', '.join(SHIPPED_SETS)}) or a path"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per row, except whole scans")
    parser.add_argument(
        "--scan-runs", type=int, default=1, help="runs of each whole-corpus scan (rows 2 and 6; minutes each)"
    )
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--only-embedding",
        action="store_true",
        help="only the embedding-stage rows (1 CPU core, and cuda where torch sees a GPU)",
    )
    parser.add_argument(
        "--embedding-model", default=None, help="sentence-transformers name or path [the shipped set's]"
    )
    parser.add_argument("--results", type=Path, default=None, help="path prefix of .json/.md [bench/results]")
    args = parser.parse_args()
    if args.results is None:
        suffix = "" if args.models == SHIPPED_SETS[0] else f"-{Path(args.models).name}"
        args.results = ROOT / "bench" / f"results{suffix}"
    bench_start = time.perf_counter()
    shards = sorted((args.shared / "web").glob("*.parquet"))
    if not shards:
        raise SystemExit(f"no shards in {args.shared / 'web'}: the benchmark reads ../shared/data/web")
    work = ROOT / "bench" / "work"
    shutil.rmtree(work / "out", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    mb = text_mb(shards)
    rows: list[dict] = []
    # The fixed passage sample of rows 4 and 4c/4d: passages of the first 400 documents.
    from corpus_lens.passages import split_passages

    spec = load_spec(args.models, args.embedding_model)
    first_shard = pq.read_table(shards[0], columns=["text"]).column(0).to_pylist()

    def passages_of(texts: list[str]) -> list[str]:
        return [t[a:b] for t in texts for a, b in split_passages(t)]

    sample = passages_of(first_shard[:400])[:256]
    sample_mb = sum(len(s.encode()) for s in sample) / 1e6

    def add(
        name: str,
        seconds: list[float],
        per: float,
        unit: str,
        baseline: str | None = None,
        ratio: float | None = None,
        target: str = "",
    ) -> None:
        s = stats(seconds)
        rows.append(
            {
                "row": name,
                "seconds": s,
                "throughput": round(per / s["median"], 2),
                "unit": unit,
                "baseline": baseline,
                "ratio": None if ratio is None else round(ratio, 3),
                "target": target,
            }
        )
        print(
            f"{name:55s} {per / s['median']:10.2f} {unit:18s} ratio {'' if ratio is None else f'{ratio:.3f}'} {target}",
            flush=True,
        )

    def embedding_rows() -> None:
        import torch

        cpu = [embedding_time(sample, "cpu", spec) for _ in range(args.runs)]
        add("4c. embedding stage alone, 1 CPU core", cpu, len(sample), "passages/s")
        if not torch.cuda.is_available():
            return
        name = torch.cuda.get_device_name()
        gpu = [embedding_time(sample, "cuda", spec) for _ in range(args.runs)]
        ratio = statistics.median(cpu) / statistics.median(gpu)
        add(f"4d. embedding stage alone, --device cuda ({name})", gpu, len(sample), "passages/s", "1 CPU core", ratio)
        # A stream long enough to keep the GPU busy: the first shard's passages, repeated up to 20,000.
        passages = passages_of(first_shard)
        stream = (passages * (20_000 // len(passages) + 1))[:20_000]
        long = [embedding_time(stream, "cuda", spec) for _ in range(args.runs)]
        per_passage_cpu = statistics.median(cpu) / len(sample)
        add(
            f"4e. embedding stage, --device cuda, {len(stream):,}-passage stream",
            long,
            len(stream),
            "passages/s",
            "1 CPU core",
            per_passage_cpu / (statistics.median(long) / len(stream)),
        )
        check = device_agreement(spec, ROOT / "classifiers" / "data", "cuda")
        rows.append({"row": "4f. test split, whole cascade embedding every passage: cpu vs cuda", "value": check})
        print(f"{rows[-1]['row']:55s} {check}", flush=True)

    try:
        if args.only_embedding:
            embedding_rows()
            return
        floor = [floor_read(shards) for _ in range(args.runs)]
        add("1. floor: pyarrow read of the text column", floor, mb, "MB/s (1 core)")
        floor_mbs = mb / statistics.median(floor)

        one = [run_scan(shards, 1, work / "out" / f"w1-{i}", spec.directory) for i in range(args.scan_runs)]
        t1 = [t for t, _ in one]
        add(
            "2a. corpuslens scan, 1 worker",
            t1,
            mb,
            "MB/s per core",
            "floor",
            (mb / statistics.median(t1)) / floor_mbs,
            ">= 0.10 of floor per core",
        )
        two = [run_scan(shards, 2, work / "out" / f"w2-{i}", spec.directory) for i in range(args.scan_runs)]
        t2 = [t for t, _ in two]
        add(
            "2b. corpuslens scan, 2 workers",
            t2,
            mb / 2,
            "MB/s per core",
            "floor",
            (mb / 2 / statistics.median(t2)) / floor_mbs,
            ">= 0.10 of floor per core",
        )
        rows.append(
            {
                "row": "2c. 2 workers vs 1 (speed-up)",
                "ratio": round(statistics.median(t1) / statistics.median(t2), 3),
                "target": ">= 1.7",
            }
        )
        print(f"{'2c. 2 workers vs 1 (speed-up)':55s} ratio {rows[-1]['ratio']} (target >= 1.7)")

        # 4. naive: embed every passage of a fixed sample, extrapolated per MB of text.
        naive = [naive_embedding(sample, spec) for _ in range(args.runs)]
        naive_mbs = sample_mb / statistics.median(naive)
        add(
            "4. naive: embed every passage + head (extrapolated)",
            naive,
            sample_mb,
            "MB/s (1 core)",
            "scan 1 worker",
            (mb / statistics.median(t1)) / naive_mbs,
            "scan >= 50x",
        )
        embedding_rows()

        # 5. MinHash: batch signatures vs datasketch per-passage loop, same passages.
        passages = [p for p in sample * 8][:2000]
        pairs = [minhash_pair(passages) for _ in range(args.runs)]
        naive_t = [a for a, _ in pairs]
        batch_t = [b for _, b in pairs]
        add("5a. MinHash naive loop (MinHash + update per shingle)", naive_t, len(passages), "passages/s")
        add(
            "5b. MinHash batch signatures (corpus_lens.dedup)",
            batch_t,
            len(passages),
            "passages/s",
            "naive loop",
            statistics.median(naive_t) / statistics.median(batch_t),
            ">= 10x",
        )
        for n in (10_000, 100_000):
            add(
                f"5c. LSH clustering of {n:,} signatures",
                [cluster_time(n) for _ in range(args.runs)],
                n,
                "signatures/s",
            )

        # 6. memory: peak RSS of the largest process (a worker) over the corpus and over it 4 times.
        rss1 = statistics.median([rss for _, rss in two])
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            four = []
            for k in range(4):
                for s in shards:
                    link = Path(tmp) / f"copy{k}-{s.name}"
                    os.symlink(s.resolve(), link)
                    four.append(link)
            t4, rss4 = run_scan(four, 2, work / "out" / "mem4", spec.directory)
        rows.append(
            {
                "row": "6. peak RSS per worker, 2 workers: 1x / 4x corpus (MB)",
                "value": [round(rss1 / 1024), round(rss4 / 1024)],
                "ratio": round(rss4 / rss1, 3),
                "target": "4x within 10% of 1x",
                "seconds_4x": round(t4, 1),
            }
        )
        print(f"{rows[-1]['row']:55s} {rss1 / 1024:.0f} / {rss4 / 1024:.0f} MB  ratio {rss4 / rss1:.3f}", flush=True)

        # Quality beside speed: recall on the labelled test split (from the shipped model card).
        metrics = json.loads((spec.directory / "metrics.json").read_text())
        for label in ("malevolent", "benevolent"):
            c, e = metrics["cascade"][label]["recall"], metrics["embedding_all"][label]["recall"]
            rows.append(
                {
                    "row": f"4b. test-split {label} recall: cascade vs embedding everything",
                    "value": [c, e],
                    "ratio": round(c - e, 4),
                    "target": "within 0.02",
                }
            )
            print(f"{rows[-1]['row']:55s} {c:.3f} vs {e:.3f}", flush=True)

        if not args.skip_peer:
            try:
                if peer_available():
                    model = spec.directory / "fasttext_depiction.ftz"
                    # A fresh folder per run: datatrove skips tasks it finds completed.
                    shutil.rmtree(work / "peer", ignore_errors=True)
                    peer = [peer_run(shards, model, work / "peer" / str(i)) for i in range(args.runs)]
                    add(
                        "3. peer: datatrove ParquetReader + FastTextClassifierFilter + ParquetWriter",
                        peer,
                        mb,
                        "MB/s (1 core)",
                        "scan 1 worker",
                        statistics.median(peer) / statistics.median(t1),
                        "scan >= 3x",
                    )
                else:
                    rows.append(
                        {"row": "3. peer: datatrove", "error": "could not install datatrove into bench/work/peer-venv"}
                    )
            except Exception as exc:  # the peer's failure must not hide our numbers
                rows.append({"row": "3. peer: datatrove", "error": str(exc)[-500:]})
                print(f"3. peer failed: {exc}")
    finally:  # whatever was measured is saved, even when a later row fails
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "gpu": gpu_name(),
            },
            "versions": {
                p: installed(p)
                for p in ("pyarrow", "dask", "datasketch", "fasttext-numpy2", "sentence-transformers", "torch")
            },
            "models": {
                "set": spec.name,
                "directory": str(spec.directory),
                "encoders": [e.model for e in spec.encoders],
            },
            "runs": {"rows": args.runs, "whole_scans": args.scan_runs},
            "corpus": {"shards": [str(s) for s in shards], "text_mb": round(mb, 2)},
            "rows": sorted(rows, key=lambda r: r["row"]),
            "bench_seconds": round(time.perf_counter() - bench_start, 1),
        }
        atomic_write_text(args.results.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        lines = [
            "# corpus_lens benchmark",
            "",
            f"{result['date']}, {os.cpu_count()} cores, {mb:.1f} MB of text; the whole benchmark took "
            f"{result['bench_seconds'] / 60:.1f} minutes. One worker = one core (pinned with taskset).",
            "",
            f"Model set `{spec.name}` ({', '.join(e.model for e in spec.encoders)}). Each whole-corpus scan "
            f"(rows 2 and 6) ran {args.scan_runs} time(s), every other row {args.runs} times.",
            "",
            "| row | throughput | unit | median s (min-max) | ratio | vs | target |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            s = r.get("seconds")
            span = f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})" if s else ""
            error = " ".join(str(r.get("error", "")).split())[-300:]  # one table cell, no traceback lines
            lines.append(
                f"| {r['row']} | {r.get('throughput', r.get('value', error))} | {r.get('unit', '')} | {span} | {r.get('ratio', '')} | {r.get('baseline', '') or ''} | {r.get('target', '')} |"
            )
        atomic_write_text(args.results.with_suffix(".md"), "\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
