"""The scan as a Dask job: the only module that imports dask.

Phase 1 runs ``annotate.scan_shard`` on the workers, one task per shard, each marking its own
completion atomically (so ``--resume`` redoes only unfinished shards). Phase 2, on the client,
clusters the flagged passages' signatures across all shards. Phase 3 writes the final
annotations, applies the policy per shard (on the workers), and writes counts, samples, the
report and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import numpy as np
import pyarrow as pa

from corpus_lens import __version__, io
from corpus_lens.annotate import FAILURE_SAMPLE, ShardJob, scan_shard
from corpus_lens.classify import CascadeSpec, load_spec
from corpus_lens.config import ScanConfig
from corpus_lens.dedup import DedupSettings, cluster, passage_id
from corpus_lens.errors import CorpusLensError, InputError, OutputError
from corpus_lens.passages import PassageSpec
from corpus_lens.policy import Policy, apply_shard, load_policy
from corpus_lens.schema import ANNOTATION_SCHEMA, DEPICTIONS
from corpus_lens.stats import merge

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _client(cfg: ScanConfig) -> Any:
    from dask.distributed import Client, LocalCluster

    if cfg.scheduler and cfg.scheduler not in ("threads", "processes"):
        try:
            return Client(cfg.scheduler, timeout="20s")
        except OSError as exc:
            raise CorpusLensError(f"cannot reach the Dask scheduler at {cfg.scheduler}: {exc}") from exc
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = cfg.workers or cores
    processes = cfg.scheduler != "threads"
    # Each worker runs one task at a time; give torch and BLAS the worker's share of the cores
    # so that workers do not fight over them.
    threads = str(max(1, cores // workers))
    extra = {"env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}} if processes else {}
    cluster_ = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=processes,
        # No dashboard; the scheduler's small HTTP server (health, metrics) still starts, so it
        # takes any free loopback port: a second scan on the machine must not warn about 8787.
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
        **extra,
    )
    return Client(cluster_)


def _versions(spec: CascadeSpec) -> dict[str, str]:
    out = {"corpus_lens": __version__, "python": platform.python_version()}
    for pkg in ("dask", "distributed", "pyarrow", "datasketch", "fasttext-numpy2", "sentence-transformers", "torch"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "not installed"
    return out


def prepare_output(cfg: ScanConfig, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check the output folder; return the previous manifest when resuming.

    Raises:
        OutputError: when the folder holds a scan and neither flag allows reusing it, or when
            ``resume`` meets a different configuration.
    """
    previous = io.read_json(io.join(cfg.output, "manifest.json"))
    if previous is None:
        return None
    if overwrite:
        io.remove_tree(cfg.output)
        return None
    if not resume:
        raise OutputError(
            f"output folder {cfg.output} already holds a scan (status {previous.get('status')!r}); "
            "pass --resume to finish it or --overwrite to replace it"
        )
    if previous.get("config_hash") != cfg.hash():
        raise OutputError(
            f"cannot resume in {cfg.output}: its scan used configuration {previous.get('config_hash')}, "
            f"this one is {cfg.hash()}; use the same options, or --overwrite"
        )
    return previous


def run_scan(
    cfg: ScanConfig,
    resume: bool = False,
    overwrite: bool = False,
    on_task_done: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run a whole scan and return its manifest.

    Args:
        cfg: the resolved configuration.
        resume: redo only shards without a completion marker in the output folder.
        overwrite: replace whatever the output folder holds.
        on_task_done: progress callback (what finished: a shard or a part of one, tasks done,
            tasks in all).

    Raises:
        CorpusLensError: for bad input, configuration or output folder; a failed shard fails
            the scan unless ``cfg.skip_bad_shards``.
    """
    started = _now()
    spec = load_spec(cfg.models, cfg.embedding_model, dict(cfg.gates))
    policy = load_policy(cfg.policy)
    shards = io.discover_shards(cfg.inputs)
    prepare_output(cfg, resume, overwrite)
    dedup = DedupSettings(cfg.dedup_ngram, cfg.dedup_num_perm, cfg.dedup_threshold, seed=1)
    manifest: dict[str, Any] = {
        "tool": "corpus_lens",
        "status": "running",
        "started": started,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "seed": cfg.seed,
        "models": spec.describe(),
        "dedup": dedup.describe(),
        "policy": policy.describe(),
        "versions": _versions(spec),
        "inputs": [{"shard": s.url, "key": s.key, "bytes": s.size} for s in shards],
    }
    io.atomic_write_json(io.join(cfg.output, "manifest.json"), manifest)

    jobs = [
        ShardJob(
            shard=s,
            output=cfg.output,
            text_column=cfg.text_column,
            id_column=cfg.id_column,
            batch_rows=cfg.batch_rows,
            passages=PassageSpec(cfg.passage_min_words, cfg.passage_max_words),
            cascade=spec,
            device=cfg.device,
            precision=cfg.precision,
            dedup=dedup,
            dedup_labels=cfg.dedup_labels,
            config_hash=cfg.hash(),
            part=part,
            parts=parts,
        )
        for s in shards
        for parts in [_parts(s, cfg.task_mb)]
        for part in range(parts)
    ]
    todo = []
    for job in jobs:
        done = io.read_json(io.join(job.work, "done.json")) if resume else None
        if done and done.get("config_hash") == cfg.hash():
            log.info("shard %s part %d: already complete, skipped (resume)", job.shard.url, job.part + 1)
        else:
            todo.append(job)
    skipped: list[dict[str, str]] = []
    client = _client(cfg)
    try:
        futures = {
            client.submit(scan_shard, job, key=f"scan-{cfg.hash()}-{job.shard.key}-{time.time_ns()}", retries=2): job
            for job in todo
        }
        from dask.distributed import as_completed

        n_done = len(jobs) - len(todo)
        for future in as_completed(futures):
            job = futures[future]
            try:
                future.result()
            except InputError as exc:
                if not cfg.skip_bad_shards:
                    for other in futures:
                        other.cancel()
                    _fail(cfg, manifest, str(exc))
                    raise
                if job.shard.url not in {s["shard"] for s in skipped}:  # each of its parts fails alike
                    log.warning("skipping bad shard: %s", exc)
                    skipped.append({"shard": job.shard.url, "error": str(exc)})
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                for other in futures:
                    other.cancel()
                message = f"shard {job.shard.url}: {type(exc).__name__}: {exc}"
                _fail(cfg, manifest, message)
                raise CorpusLensError(message) from exc
            n_done += 1
            if on_task_done:
                part = f" (part {job.part + 1} of {job.parts})" if job.parts > 1 else ""
                on_task_done(job.shard.url + part, n_done, len(jobs))
        good = [j for j in jobs if j.shard.url not in {s["shard"] for s in skipped}]
        clusters = _cluster_all(good, dedup)
        counts = _finalize_annotations(good, clusters, cfg)
        good_shards = list({j.shard.url: j.shard for j in good}.values())
        policy_futures = [
            client.submit(
                apply_shard,
                shard.url,
                shard.key,
                cfg.output,
                cfg.text_column,
                cfg.id_column,
                cfg.batch_rows,
                policy,
                cfg.granularity,
                cfg.seed,
                key=f"policy-{shard.key}-{time.time_ns()}",
                retries=2,
            )
            for shard in good_shards
        ]
        policy_stats = dict(zip([s.url for s in good_shards], client.gather(policy_futures)))
    except KeyboardInterrupt:
        manifest.update(status="interrupted", finished=_now())
        io.atomic_write_json(io.join(cfg.output, "manifest.json"), manifest)
        raise
    finally:
        client.close()
        cluster_ = getattr(client, "cluster", None)
        if cluster_ is not None:
            cluster_.close()

    counts = _reconcile(counts, policy_stats, skipped, policy)
    io.atomic_write_json(io.join(cfg.output, "counts.json"), counts)
    _write_samples(good_shards, cfg)
    manifest.update(
        status="complete",
        finished=_now(),
        skipped_shards=skipped,
        inputs=[
            {
                "shard": s.url,
                "key": s.key,
                "bytes": s.size,
                "rows": counts["per_shard"].get(s.url, {}).get("rows_in"),
            }
            for s in shards
        ],
    )
    from corpus_lens.report import write_report

    write_report(cfg.output, manifest=manifest, counts=counts)
    io.atomic_write_json(io.join(cfg.output, "manifest.json"), manifest)
    return manifest


def _fail(cfg: ScanConfig, manifest: dict[str, Any], message: str) -> None:
    manifest.update(status="failed", finished=_now(), error=message)
    io.atomic_write_json(io.join(cfg.output, "manifest.json"), manifest)


def _parts(shard: io.Shard, task_mb: float) -> int:
    """How many row-range tasks a shard becomes: about one per ``task_mb`` of file, so that a
    few large shards still keep every worker busy to the end."""
    return max(1, round((shard.size or 0) / (task_mb * 1e6)))


def _cluster_all(jobs: list[ShardJob], dedup: DedupSettings) -> dict[str, str]:
    tables = [io.read_table(io.join(j.work, "signatures.parquet")) for j in jobs]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    pids = table.column("pid").to_pylist()
    sigs = table.column("signature").combine_chunks().flatten().to_numpy().reshape(-1, dedup.num_perm)
    return cluster(pids, sigs.astype(np.uint32), dedup)


def _finalize_annotations(jobs: list[ShardJob], clusters: dict[str, str], cfg: ScanConfig) -> dict[str, Any]:
    """Write annotations with cluster ids; return per-shard stats with dedup counts added."""
    per_shard: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for c in clusters.values():
        sizes[c] = sizes.get(c, 0) + 1
    by_shard: dict[str, list[ShardJob]] = {}
    for job in jobs:
        by_shard.setdefault(job.shard.url, []).append(job)
    for parts in by_shard.values():
        job = parts[0]
        ann = pa.concat_tables(io.read_table(io.join(p.work, "annotations.parquet")) for p in parts)
        pids = [
            passage_id(d, k, job.shard.key)
            for d, k in zip(ann.column("doc_id").to_pylist(), ann.column("passage_index").to_pylist())
        ]
        cl = [clusters.get(p) for p in pids]
        rep = [None if c is None else c == p for c, p in zip(cl, pids)]
        ann = ann.set_column(ann.schema.get_field_index("dup_cluster"), "dup_cluster", pa.array(cl, pa.string()))
        ann = ann.set_column(
            ann.schema.get_field_index("dup_is_representative"), "dup_is_representative", pa.array(rep, pa.bool_())
        )
        ann = ann.cast(ANNOTATION_SCHEMA)
        io.atomic_write_table(io.join(cfg.output, "annotations", f"{job.shard.key}.parquet"), ann)
        docs = pa.concat_tables(io.read_table(io.join(p.work, "documents.parquet")) for p in parts)
        io.atomic_write_table(io.join(cfg.output, "annotations", f"{job.shard.key}.documents.parquet"), docs)
        stats: dict[str, Any] = {}
        for p in parts:
            stats = merge(stats, io.read_json(io.join(p.work, "stats.json")))
        stats["failures"] = stats.get("failures", [])[:FAILURE_SAMPLE]
        dedup_stats: dict[str, Any] = {}
        for d, c, r in zip(ann.column("depiction").to_pylist(), cl, rep):
            if c is None:
                continue
            dedup_stats.setdefault(d, {"flagged": 0, "unique": 0})
            dedup_stats[d]["flagged"] += 1
            dedup_stats[d]["unique"] += int(bool(r))
        stats["dedup"] = dedup_stats
        per_shard[job.shard.url] = stats
    largest = sorted(((n, c) for c, n in sizes.items() if n > 1), key=lambda x: (-x[0], x[1]))[:20]
    return {"per_shard": per_shard, "largest_clusters": [{"cluster": c, "size": n} for n, c in largest]}


def _reconcile(
    counts: dict[str, Any], policy_stats: dict[str, Any], skipped: list[dict[str, str]], policy: Policy
) -> dict[str, Any]:
    """Totals and the per-shard reconciliation; raises if any row is unaccounted for."""
    total: dict[str, Any] = {}
    reconciliation = {}
    for shard, stats in counts["per_shard"].items():
        pstats = policy_stats.get(shard, {})
        stats["policy"] = pstats
        rows_in, failed = stats["rows_in"], stats["rows_failed"]
        dropped = pstats.get("rows_dropped", 0)
        kept = rows_in - failed - dropped
        if pstats and pstats.get("rows_kept") != kept:
            raise CorpusLensError(
                f"shard {shard}: rows do not reconcile: {rows_in} in, {failed} failed, "
                f"{dropped} dropped, but the policy kept {pstats.get('rows_kept')}"
            )
        reconciliation[shard] = {"rows_in": rows_in, "rows_kept": kept, "rows_dropped": dropped, "rows_failed": failed}
        trimmed = {k: v for k, v in stats.items() if k not in ("failures", "seconds")}
        total = merge(total, trimmed)
    for s in skipped:
        reconciliation[s["shard"]] = {
            "rows_in": None,
            "rows_kept": 0,
            "rows_dropped": 0,
            "rows_failed": None,
            "skipped": s["error"],
        }
    total.pop("dedup", None)
    dedup_total: dict[str, Any] = {}
    for stats in counts["per_shard"].values():
        dedup_total = merge(dedup_total, stats.get("dedup", {}))
    return {
        "totals": total,
        "per_shard": counts["per_shard"],
        "dedup": {"per_label": dedup_total, "largest_clusters": counts["largest_clusters"]},
        "reconciliation": reconciliation,
        "skipped_shards": skipped,
        "policy": policy.name,
    }


def _sample_key(seed: int, pid: str) -> str:
    return hashlib.sha1(f"{seed}:{pid}".encode()).hexdigest()


def _write_samples(shards: list[io.Shard], cfg: ScanConfig) -> None:
    """Per label, the passages with the smallest hash of (seed, id): stable across reruns."""
    best: dict[str, list[tuple[str, dict[str, Any]]]] = {d: [] for d in DEPICTIONS}
    for shard in shards:
        ann = io.read_table(io.join(cfg.output, "annotations", f"{shard.key}.parquet"))
        cols = [
            "doc_id",
            "shard",
            "row",
            "passage_index",
            "char_start",
            "char_end",
            "depiction",
            "mode",
            "tags",
            "stage",
            "text",
            "dup_cluster",
            "score_malevolent",
            "score_benevolent",
            "score_neutral",
            "score_none",
        ]
        for rec in ann.select(cols).to_pylist():
            key = _sample_key(cfg.seed, passage_id(rec["doc_id"], rec["passage_index"], shard.key))
            bucket = best[rec["depiction"]]
            bucket.append((key, rec))
            if len(bucket) > 4 * cfg.samples_per_label:
                bucket.sort(key=lambda x: x[0])
                del bucket[cfg.samples_per_label :]
    for label, bucket in best.items():
        bucket.sort(key=lambda x: x[0])
        lines = []
        for _, rec in bucket[: cfg.samples_per_label]:
            rec = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}
            lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=True))
        io.atomic_write_text(io.join(cfg.output, "samples", f"{label}.jsonl"), "".join(line + "\n" for line in lines))
