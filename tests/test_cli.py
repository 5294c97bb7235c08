"""The CLI in-process: stdout, stderr and exit code asserted apart, with a tiny real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arxsum.cli import app

EDGE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "edge"  # ../shared beside the repo
if not EDGE.is_dir():
    EDGE = Path("/work/shared/samples/edge")
GEN = ["--device", "cpu", "--num-beams", "2", "--max-length", "12", "--min-length", "0", "--timeout", "0"]
TEXT = ("we study the dynamics of a driven quantum system coupled to a thermal bath . the results are obtained "
        "with a perturbative expansion in the coupling and confirmed by numerical simulations .")


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.delenv("ARXSUM_DEBUG", raising=False)
    monkeypatch.delenv("ARXSUM_MODEL", raising=False)
    monkeypatch.delenv("ARXSUM_DEVICE", raising=False)
    runner = CliRunner(env={"COLUMNS": "120"})

    def invoke(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def paper_files(tmp_path):
    paths = []
    for i, n in enumerate([10, 60, 25, 1, 40]):
        path = tmp_path / f"paper{i}.txt"
        path.write_text(" ".join([TEXT] * n))
        paths.append(path)
    return paths


def test_help_lists_subcommands_and_the_summarize_options(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for word in ["summarize", "--num-beams", "--output-dir", "--files-from", "--raw", "--batch-size"]:
        assert word in result.stdout
    assert cli("--version").stdout.startswith("arxsum ")


def test_raw_json_summary_is_exactly_the_summarizers(cli, tiny_model_dir, paper_files):
    from arxsum.decoding import GenerationOptions
    from arxsum.summarizer import Summarizer

    result = cli(paper_files[0], "--model", tiny_model_dir, "--raw", "--format", "json", *GEN)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    summarizer = Summarizer.from_pretrained(str(tiny_model_dir), device="cpu")
    expected = summarizer.summarize_batch([paper_files[0].read_text()],
                                          GenerationOptions(num_beams=2, max_length=12, min_length=0))[0]
    assert record["summary"] == expected.text
    assert record["input_tokens"] == expected.input_tokens and record["truncated"] == expected.truncated
    assert record["model"] == str(tiny_model_dir) and record["source"] == str(paper_files[0])
    assert isinstance(record["seconds"], float)


def test_summarize_subcommand_and_default_command_agree(cli, tiny_model_dir, paper_files):
    a = cli(paper_files[3], "--model", tiny_model_dir, "--raw", *GEN)
    b = cli("summarize", paper_files[3], "--model", tiny_model_dir, "--raw", *GEN)
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout and a.stdout.endswith("\n")


def test_jsonl_batch_of_several_files_keeps_input_order(cli, tiny_model_dir, paper_files):
    result = cli(*paper_files, "--model", tiny_model_dir, "--format", "jsonl", "--batch-size", "4",
                 "--max-input-tokens", "200", "--quiet", *GEN)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["source"] for r in records] == [str(p) for p in paper_files]
    assert [r["truncated"] for r in records] == [True, True, True, False, True]
    assert all(r["input_tokens"] <= 200 for r in records)
    assert result.stderr == ""


def test_truncation_is_noted_and_too_many_input_tokens_is_a_usage_error(cli, tiny_model_dir, paper_files):
    result = cli(paper_files[1], "--model", tiny_model_dir, "--max-input-tokens", "64", *GEN)
    assert result.exit_code == 0 and "truncated from" in result.stderr
    result = cli(paper_files[1], "--model", tiny_model_dir, "--max-input-tokens", "100000", *GEN)
    assert result.exit_code == 2
    assert result.stderr.startswith("arxsum: error: --max-input-tokens 100000 is more than the model's")
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_a_longer_summary_than_the_decoders_positions_is_refused_up_front(cli, tiny_model_dir, paper_files):
    """--max-length past the decoder's learned positions (512 in the tiny model): one usage line naming
    them before any paper is read, not an index error at the first paper."""
    result = cli(*paper_files[:2], "--model", tiny_model_dir, *GEN, "--max-length", "5000")
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "arxsum: error: --max-length 5000 is more than the model's 512 decoder positions"
    assert "2 not reached" in lines[0] and result.stdout == "" and "Traceback" not in result.stderr


def test_text_and_md_formats_for_several_inputs_and_output_file(cli, tiny_model_dir, paper_files, tmp_path):
    two = paper_files[3:5]
    result = cli(*two, "--model", tiny_model_dir, "-q", *GEN)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"==> {two[0]} <==\n") and f"\n\n==> {two[1]} <==\n" in result.stdout
    out = tmp_path / "summaries.md"
    result = cli(*two, "--model", tiny_model_dir, "-f", "md", "-o", out, "-q", *GEN)
    assert result.exit_code == 0 and result.stdout == ""
    text = out.read_text()
    assert text.startswith("# paper3.txt\n\n") and "\n# paper4.txt\n\n" in text


def test_output_dir_then_resume(cli, tiny_model_dir, paper_files, tmp_path):
    out = tmp_path / "out"
    first = cli(paper_files[3], paper_files[0], "--model", tiny_model_dir, "--output-dir", out, "-f", "json", *GEN)
    assert first.exit_code == 0 and first.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["paper0.json", "paper3.json"]
    second = cli(paper_files[3], paper_files[0], "--model", "/nonexistent/model", "--output-dir", out,
                 "-f", "json", *GEN)
    assert second.exit_code == 0, second.stderr  # everything skipped: the model is never loaded
    assert "0 done, 2 skipped, 0 failed" in second.stderr


def test_stdin_and_files_from_stdin(cli, tiny_model_dir, paper_files):
    result = cli("-", "--model", tiny_model_dir, "--raw", "-f", "json", *GEN, input=TEXT)
    assert result.exit_code == 0 and json.loads(result.stdout)["source"] == "-"
    listing = "\n".join(str(p) for p in paper_files[3:]) + "\n"
    result = cli("--files-from", "-", "--model", tiny_model_dir, "-f", "jsonl", "-q", *GEN, input=listing)
    assert result.exit_code == 0
    assert [json.loads(x)["source"] for x in result.stdout.splitlines()] == [str(p) for p in paper_files[3:]]


def test_bad_inputs_get_one_line_each_and_exit_1(cli, tiny_model_dir, paper_files):
    result = cli(EDGE / "scanned-no-text-ccitt.pdf", "--model", tiny_model_dir, *GEN)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"arxsum: {EDGE / 'scanned-no-text-ccitt.pdf'}: no text layer: OCR it first\n"
    result = cli(EDGE, paper_files[3], "--model", tiny_model_dir, "-f", "jsonl", *GEN[:-2])  # with workers
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2  # the AES owner-only PDF opens, and the good paper
    assert "2 done, 0 skipped, 4 failed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "is not one of auto, cpu, cuda, cuda:N"),
    (["--num-beams", "0"], "num_beams must be at least 1"),
    (["--format", "xml"], "xml"),
    (["-o", "x.txt", "--output-dir", "d"], "cannot be used together"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--workers", "2"], "--workers is for --ray runs"),
    (["--ray", "--workers", "0"], "--workers"),
])
def test_usage_errors_exit_2_with_one_line(cli, paper_files, args, message):
    result = cli(paper_files[0], *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr and result.stdout == ""


def test_no_inputs_is_a_usage_error(cli):
    result = cli("summarize")
    assert result.exit_code == 2 and "no inputs" in result.stderr


def test_a_missing_model_is_one_line_and_exit_1(cli, paper_files):
    result = cli(paper_files[0], "--model", "/nonexistent/model", "--device", "cpu", "--timeout", "0")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("arxsum: error: ") and len(result.stderr.splitlines()) == 1


def test_debug_lets_the_traceback_through(cli, paper_files, monkeypatch):
    monkeypatch.setenv("ARXSUM_DEBUG", "1")
    result = cli(paper_files[0], "--model", "/nonexistent/model", "--device", "cpu", "--timeout", "0")
    assert result.exit_code == 1 and result.exception is not None


def test_auto_device_without_cuda_notes_the_cpu(cli, tiny_model_dir, paper_files, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli(paper_files[3], "--model", tiny_model_dir, *GEN[2:])
    assert result.exit_code == 0 and "no CUDA device found; running on CPU" in result.stderr
    assert "running on CPU" not in result.stdout
    # the bfloat16 hint: only where the CPU has AVX512-BF16, and not to whom already asked for it
    from arxsum.cpukernels import cpuinfo

    assert ("--dtype bfloat16 about halves that" in result.stderr) == ("avx512_bf16" in cpuinfo("flags").split())
    result = cli(paper_files[3], "--model", tiny_model_dir, "--dtype", "bfloat16", *GEN[2:])
    assert result.exit_code == 0 and "running on CPU" in result.stderr and "--dtype bfloat16" not in result.stderr


def test_an_internal_error_is_one_line_outside_tests(cli, paper_files, monkeypatch, fake_summarizer):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr("arxsum.cli.load_summarizer", lambda *args: fake_summarizer)
    fine = cli(paper_files[3], "--timeout", "0")
    assert fine.exit_code == 0 and fine.stderr == ""  # the command's own typer.Exit passes through
    monkeypatch.setattr("arxsum.cli.run", broken)
    result = cli(paper_files[0])
    assert result.exit_code == 1
    assert result.stderr == ("arxsum: error: internal error: division by zero; "
                             "ARXSUM_DEBUG=1 shows the traceback\n")


def test_every_generation_flag_reaches_the_options(monkeypatch, paper_files):
    """The flags build GenerationOptions; unset ones keep the dataclass's defaults."""
    from arxsum import cli as cli_module
    from arxsum.decoding import GenerationOptions

    seen = {}
    real = cli_module.generation_options

    def spy(given):
        seen["options"] = real(given)
        return seen["options"]

    monkeypatch.setattr(cli_module, "generation_options", spy)
    runner = CliRunner()
    runner.invoke(cli_module.app, [str(paper_files[0]), "--model", "/nonexistent", "--num-beams", "2",
                                   "--length-penalty", "1.0", "--max-length", "64", "--min-length", "0",
                                   "--no-repeat-ngram-size", "7", "--no-early-stopping"])
    assert seen["options"] == GenerationOptions(num_beams=2, length_penalty=1.0, max_length=64, min_length=0,
                                                no_repeat_ngram_size=7, early_stopping=False)
    runner.invoke(cli_module.app, [str(paper_files[0]), "--model", "/nonexistent"])
    assert seen["options"] == GenerationOptions()


def test_help_reads_at_80_columns_without_type_placeholders_or_lost_markup():
    runner = CliRunner(env={"COLUMNS": "80", "TERM": "xterm-256color"})
    for args in (["--help"], ["eval", "--help"], ["extract", "--help"], ["env", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, args
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, args
        assert not any(placeholder in result.stdout for placeholder in ("<bool>", "<str>", "<int>", "<float>"))
    main = runner.invoke(app, ["--help"]).stdout
    assert "Ray cluster (pip install 'arxsum[ray]')" in main  # [ray] is not taken for markup
    assert "  --keep-appendix  " in main and "  --max-pages N  " in main and "  -o, --output FILE  " in main
    assert "Examples:" in main and "arxsum papers/ --output-dir out/" in main
