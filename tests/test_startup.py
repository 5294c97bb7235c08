"""Commands that need no model start without torch: each runs in a fresh interpreter and reports
what it imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Runs `arxsum ARGS...` through the console script's entry point; at exit, writes which of the
# model stack's modules were imported to the file named by argv[1].
PROBE = """
import atexit, json, sys
out, sys.argv = sys.argv[1], ["arxsum", *sys.argv[2:]]
heavy = ("torch", "arxsum.model", "arxsum.decoding", "arxsum.summarizer", "arxsum.loading")
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(m for m in sys.modules if m in heavy))))
from arxsum.cli import main
main()
"""


def imported_heavy(tmp_path, *args: str, stdin: str = "") -> tuple[list[str], subprocess.CompletedProcess]:
    report = tmp_path / "modules.json"
    result = subprocess.run([sys.executable, "-c", PROBE, str(report), *args], input=stdin,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    return json.loads(report.read_text()), result


@pytest.fixture
def data_and_predictions(tmp_path):
    data, pred = tmp_path / "data.jsonl", tmp_path / "pred.jsonl"
    data.write_text('{"article": "we study things .", "abstract": "we study things ."}\n')
    pred.write_text('{"prediction": "we study things ."}\n')
    return data, pred


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["summarize", "--help"], ["extract", "--help"],
                                  ["eval", "--help"], ["env"]])
def test_help_version_and_env_import_no_torch(tmp_path, args):
    heavy, result = imported_heavy(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert heavy == [], f"arxsum {' '.join(args)} imported {heavy}"


def test_env_names_torch_by_its_metadata(tmp_path):
    heavy, result = imported_heavy(tmp_path, "env")
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    from importlib.metadata import version

    assert lines["torch"].strip() == version("torch")
    assert "torch" not in heavy


def test_extract_imports_no_torch_even_counting_tokens(tmp_path, tiny_model_dir):
    paper = tmp_path / "paper.txt"
    paper.write_text("We study the dynamics of a driven system. The results hold.\n")
    heavy, result = imported_heavy(tmp_path, "extract", str(paper))
    assert result.returncode == 0, result.stderr
    assert "we study the dynamics" in result.stdout and heavy == []
    heavy, result = imported_heavy(tmp_path, "extract", "--format", "json", "--model", str(tiny_model_dir), str(paper))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] > 0 and heavy == []


def test_eval_with_predictions_imports_no_torch(tmp_path, data_and_predictions):
    data, pred = data_and_predictions
    heavy, result = imported_heavy(tmp_path, "eval", "--predictions", str(pred), str(data), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rouge1"]["mean"] == pytest.approx(100.0)
    assert heavy == []


def test_a_summary_does_import_the_model_stack(tmp_path, tiny_model_dir):
    """The probe itself works: a command that needs the model does load torch."""
    paper = tmp_path / "paper.txt"
    paper.write_text("we study the dynamics of a driven system . " * 5)
    heavy, result = imported_heavy(tmp_path, str(paper), "--model", str(tiny_model_dir), "--device", "cpu",
                                   "--num-beams", "1", "--max-length", "6", "--min-length", "0", "--timeout", "0")
    assert result.returncode == 0, result.stderr
    assert "torch" in heavy and "arxsum.summarizer" in heavy
