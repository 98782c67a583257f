"""Both notebooks run top to bottom on a scan of the bundled demo corpus."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from typer.testing import CliRunner

from corpus_lens.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = CliRunner().invoke(
        app, ["scan", str(ROOT / "demo" / "corpus"), "--output", str(out), "--scheduler", "threads", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["audit_walkthrough.ipynb", "threshold_calibration.ipynb"])
def test_notebook_runs(name: str, demo_scan: Path, monkeypatch: pytest.MonkeyPatch):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs must be stripped"
    monkeypatch.setenv("CORPUS_LENS_SCAN_DIR", str(demo_scan))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert errors == []
