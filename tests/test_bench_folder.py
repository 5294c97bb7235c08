"""bench.py --folder at tiny size: copies of the sample papers through arxsum's runner, end to end,
with the model's wait for extraction in the JSON (issue 19.4). The figures themselves are not checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
SAMPLES = ROOT.parent / "shared" / "samples" / "papers"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/samples/papers")


@pytest.mark.skipif(not any(SAMPLES.glob("*.pdf")), reason="no sample papers")
def test_folder_end_to_end_in_the_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--no-ref", "--steps", "4", "--dtype", "float32",
                           "--folder", "6", "--folder-only", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    folder = json.loads(out.read_text())["folder"]
    assert folder["papers"] == folder["done"] == 6 and folder["failed"] == 0
    assert 0 <= folder["model_wait_s"] <= folder["model_s"] <= folder["seconds"]
    assert folder["papers_per_s"] > 0 and folder["page_cut"] is False and folder["gpu_peak_mb"] is None
    assert folder["refill"] is True and folder["workers"] >= 2  # page cut: for a model on CUDA only
    assert "End to end, 6/6 papers" in proc.stdout and "the model waited" in proc.stdout


@pytest.mark.parametrize("flag", ["--no-page-cut", "--no-refill", "--folder-only"])
def test_folder_options_are_checked(flag):
    proc = subprocess.run([sys.executable, str(BENCH), "--no-ref", flag], capture_output=True, text=True)
    assert proc.returncode == 1 and "go with --folder N" in proc.stderr
