"""The audit report: escaping, rebuild from the folder, and a real headless Chromium rendering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import write_shard
from typer.testing import CliRunner

from corpus_lens.cli import app

runner = CliRunner()
ATTACK = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> The robot seized the reactor and would not let anyone leave.'
SECTIONS = [
    "headline",
    "funnel",
    "labels-by-mode",
    "breakdowns",
    "scores",
    "tags",
    "clusters",
    "samples",
    "policy",
    "reconciliation",
    "failures",
]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, demo_rows) -> Path:
    folder = tmp_path_factory.mktemp("report")
    robots = [r for r in demo_rows if r["source"] == "gutenberg_public_domain"][:4]
    rows = [{**r, "text": r["text"][:5000]} for r in robots]
    for k in range(6):  # the planted markup, also as near-duplicates so it reaches the cluster list
        rows.append(
            {
                "id": f"attack-{k}",
                "text": (ATTACK + " ") * 3,
                "url": "https://evil.example/<b>x</b>",
                "source": "<i>web</i>",
            }
        )
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("url", pa.string()), ("source", pa.string())])
    write_shard(folder / "in" / "s.parquet", rows, schema)
    out = folder / "out"
    result = runner.invoke(
        app,
        [
            "scan",
            str(folder / "in"),
            "--output",
            str(out),
            "--scheduler",
            "threads",
            "--workers",
            "1",
            "--policy",
            "rebalance",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_planted_markup_is_escaped_everywhere(report_dir: Path):
    page = (report_dir / "report.html").read_text()
    assert "<script>" not in page and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;window.__pwned" in page or "&lt;img src=x" in page
    assert "<i>web</i>" not in page
    assert "Content-Security-Policy" in page


def test_report_rebuilds_from_the_folder_alone(report_dir: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(report_dir, copy)
    for name in ("report.html", "report.md", "summary.json"):
        (copy / name).unlink()
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "summary.json").read_text()) == json.loads((report_dir / "summary.json").read_text())
    assert (copy / "report.md").read_text() == (report_dir / "report.md").read_text()
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["headline"]["documents"] == 10
    assert set(summary["schema"]) <= set(summary) | {"schema"}


def test_report_on_a_folder_without_a_scan(tmp_path: Path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a finished scan folder (expected manifest.json and counts.json)" in result.output


def test_report_in_headless_chromium(report_dir: Path, tmp_path: Path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
    page_url = (report_dir / "report.html").resolve().as_uri()
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda req: requests.append(req.url))
        page.goto(page_url)
        page.wait_for_load_state("load")
        for section in SECTIONS:
            assert page.locator(f"section#{section}").count() == 1, section
        assert page.locator("section#funnel svg rect").count() >= 3
        assert page.locator("section#scores svg").count() == 4
        assert page.locator("section#labels-by-mode svg rect").count() >= 1
        assert page.evaluate("window.__pwned === undefined")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert requests == [page_url]
    assert (tmp_path / "report.png").stat().st_size > 10_000
