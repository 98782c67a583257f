"""Scale-out and faults with the real things: a Dask cluster on loopback, killed processes,
an HTTP server and an S3 API (moto) on loopback."""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_shard
from typer.testing import CliRunner

from corpus_lens.cli import app

BIN = Path(sys.executable).parent
runner = CliRunner()
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def annotations(out: Path) -> dict[str, pa.Table]:
    """Annotation tables by file name, without the column that names the input location."""
    return {p.name: pq.read_table(p).drop_columns(["shard"]) for p in sorted((out / "annotations").glob("*.parquet"))}


def comparable_counts(out: Path) -> dict:
    counts = json.loads((out / "counts.json").read_text())
    strip = lambda d: {k: v for k, v in d.items() if k not in ("seconds",)}
    return {
        "totals": counts["totals"],
        "per_shard": [strip(v) for _, v in sorted(counts["per_shard"].items())],
        "recon": [v for _, v in sorted(counts["reconciliation"].items())],
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, demo_rows) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    robots = [r for r in demo_rows if r["source"] == "gutenberg_public_domain"][:8]
    other = [r for r in demo_rows if r["source"] != "gutenberg_public_domain"][:40]
    rows = [{**r, "text": r["text"][:4000]} for r in robots + other]
    for k in range(4):
        write_shard(folder / f"shard-{k}.parquet", rows[k::4])
    return folder


@pytest.fixture(scope="module")
def local(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    result = runner.invoke(app, ["scan", str(shards), "--output", str(out), "--scheduler", "threads", "--workers", "1"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture()
def cluster():
    port = free_port()
    procs = [
        subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    address = f"tcp://127.0.0.1:{port}"
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    from dask.distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=120)
    yield address, procs
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)


def test_real_cluster_matches_local_run(cluster, shards: Path, local: Path, tmp_path: Path):
    address, _ = cluster
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(shards), "--output", str(out), "--scheduler", address])
    assert result.exit_code == 0, result.output
    assert annotations(out) == annotations(local)
    assert comparable_counts(out) == comparable_counts(local)


def test_worker_killed_mid_scan_still_completes(cluster, shards: Path, local: Path, tmp_path: Path):
    address, procs = cluster
    out = tmp_path / "out"
    cmd = [str(BIN / "corpuslens"), "scan", str(shards), "--output", str(out), "--scheduler", address]
    scan = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("_work/*/*/done.json")):
        time.sleep(0.05)
    procs[1].kill()  # one worker dies with work outstanding
    stdout, stderr = scan.communicate(timeout=300)
    assert scan.returncode == 0, stderr[-2000:]
    assert annotations(out) == annotations(local)


def test_local_process_cluster_matches_and_keeps_dask_quiet(shards: Path, local: Path, tmp_path: Path):
    """A scan on its own local cluster of worker processes, as a user runs it: the same labels
    as the threaded run, and no Dask INFO lines (scheduler and worker start/stop) or port warnings on stderr."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    cmd = [str(BIN / "corpuslens"), "scan", str(shards), "--output", str(out), "--workers", "2"]
    with socket.socket() as busy:  # as if another cluster's dashboard held Dask's default port
        try:
            busy.bind(("127.0.0.1", 8787))
            busy.listen()
        except OSError:
            pass  # something holds it already: the same condition
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already in use" not in done.stderr, done.stderr[-2000:]
    # One thread per worker process here, two threads for torch in the threaded run: labels are
    # equal, scores agree to float32 rounding (README, "Running on a Dask cluster").
    got, want = annotations(out), annotations(local)
    assert got.keys() == want.keys()
    for name, table in got.items():
        for column in table.column_names:
            a, b = table[column].to_pylist(), want[name][column].to_pylist()
            if pa.types.is_floating(table[column].type):
                assert np.allclose(np.array(a, float), np.array(b, float), atol=1e-5, equal_nan=True), column
            else:
                assert a == b, (name, column)
    noise = [line for line in done.stderr.splitlines() if " INFO distributed." in line]
    assert not noise, noise[:3]
    assert "done:" in done.stderr and "report:" in done.stdout


def _interrupt_then_resume(sig: int, shards: Path, local: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        str(BIN / "corpuslens"),
        "scan",
        str(shards),
        "--output",
        str(out),
        "--workers",
        "1",
        "--scheduler",
        "threads",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if (out / "_work").exists() and len(list((out / "_work").glob("*/*/done.json"))) >= 1:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    done_before = {str(p.parent): p.stat().st_mtime_ns for p in (out / "_work").glob("*/*/done.json")}
    assert 1 <= len(done_before) < 4, "the interruption should land mid-scan"
    assert json.loads((out / "manifest.json").read_text())["status"] != "complete"
    result = runner.invoke(
        app, ["scan", str(shards), "--output", str(out), "--resume", "--scheduler", "threads", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    done_after = {str(p.parent): p.stat().st_mtime_ns for p in (out / "_work").glob("*/*/done.json")}
    assert all(done_after[k] == v for k, v in done_before.items()), "finished shards must not be redone"
    assert annotations(out) == annotations(local)
    assert comparable_counts(out) == comparable_counts(local)


def test_sigkill_then_resume_equals_uninterrupted(shards: Path, local: Path, tmp_path: Path):
    _interrupt_then_resume(signal.SIGKILL, shards, local, tmp_path)


def test_sigint_then_resume_equals_uninterrupted(shards: Path, local: Path, tmp_path: Path):
    _interrupt_then_resume(signal.SIGINT, shards, local, tmp_path)


def test_http_input_matches_local(shards: Path, local: Path, tmp_path: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = [f"{base}/{p.name}" for p in sorted(shards.glob("*.parquet"))]
        out = tmp_path / "out"
        result = runner.invoke(app, ["scan", *urls, "--output", str(out), "--scheduler", "threads", "--workers", "1"])
        assert result.exit_code == 0, result.output
        assert annotations(out) == annotations(local)
        missing = runner.invoke(
            app, ["scan", f"{base}/nope.parquet", "--output", str(tmp_path / "o2"), "--scheduler", "threads"]
        )
        assert missing.exit_code == 1 and "nope.parquet: no such file or directory" in missing.output
    finally:
        server.shutdown()


def test_s3_input_and_output_match_local(shards: Path, local: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._port}"
        for key, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            monkeypatch.setenv(key, value)
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
        fs.mkdir("corpus")
        for p in sorted(shards.glob("*.parquet")):
            fs.put(str(p), f"corpus/in/{p.name}")
        result = runner.invoke(
            app, ["scan", "s3://corpus/in/", "--output", "s3://corpus/out", "--scheduler", "threads", "--workers", "1"]
        )
        assert result.exit_code == 0, result.output
        fs.invalidate_cache()
        got = tmp_path / "got"
        fs.get("corpus/out/", str(got), recursive=True)
        assert annotations(got) == annotations(local)
        assert json.loads((got / "manifest.json").read_text())["status"] == "complete"
        assert (got / "report.html").is_file()
    finally:
        server.stop()
