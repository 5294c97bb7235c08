"""The batch runner with a fake summarizer: bad input never costs a result, resume, interrupts,
stdout order, the OOM back-off, and the closing report."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import torch

from arxsum.options import GenerationOptions
from arxsum.runner import (
    Progress,
    RunConfig,
    default_batch_size,
    estimate_paper_bytes,
    run,
)

EDGE = Path("/work/shared/samples/edge")
if not EDGE.is_dir():
    EDGE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "edge"


def papers(folder: Path, words: dict[str, int]) -> list[Path]:
    """Text papers of the given lengths (in words), so the fake summarizer's token counts differ."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n in words.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(f"{Path(name).stem}{i}" for i in range(n)))
        paths.append(path)
    return paths


def go(cfg: RunConfig, summarizer, stdin: bytes = b"", console_width: int = 200):
    from rich.console import Console

    out, err = io.StringIO(), io.StringIO()
    console = Console(file=err, width=console_width, color_system=None)
    report = run(cfg, load_summarizer=lambda: summarizer, stdin=io.BytesIO(stdin), stdout=out, console=console)
    return report, out.getvalue(), err.getvalue()


class NoModel:
    def __getattr__(self, name):
        raise AssertionError("the model was loaded but nothing needed it")


def test_mixed_good_and_bad_inputs_finish_with_exit_1_and_one_line_each(tmp_path, fake_summarizer):
    folder = tmp_path / "mixed"
    papers(folder, {"good1.txt": 5, "good2.md": 7})
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "empty.txt").write_text("   \n")
    (folder / "truncated.pdf").write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog")
    for f in EDGE.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (tmp_path / "nothing").mkdir()
    cfg = RunConfig(inputs=[str(folder), str(tmp_path / "nothing")], format="jsonl", timeout=30)
    report, out, err = go(cfg, fake_summarizer)
    assert report.exit_code == 1
    status = {Path(o.name).name: (o.status, o.reason) for o in report.outcomes}
    assert status["good1.txt"][0] == status["good2.md"][0] == "done"
    assert status["encrypted-aes256-owner-only.pdf"][0] == "done"  # empty user password + crypto extra
    assert "password" in status["encrypted-rc4-40-userpw.pdf"][1]
    assert "OCR" in status["scanned-no-text-ccitt.pdf"][1]
    assert "zero pages" in status["zero-pages.pdf"][1]
    assert "not a PDF" in status["not-a-pdf-garbage.pdf"][1]
    assert "UTF-8" in status["latin1.txt"][1]
    assert "empty" in status["empty.txt"][1]
    assert status["truncated.pdf"][0] == "failed"
    assert "no papers" in status["nothing"][1]
    assert "Traceback" not in err
    for o in report.failures:
        assert f"arxsum: {o.name}: {o.reason}\n" in err
        assert "\n" not in o.reason
    assert "3 done, 0 skipped, 8 failed" in err
    assert [json.loads(line)["source"] for line in out.splitlines()] == [
        str(folder / "encrypted-aes256-owner-only.pdf"), str(folder / "good1.txt"), str(folder / "good2.md")]


def test_output_dir_mirrors_the_tree_and_a_second_run_skips_everything(tmp_path, fake_summarizer):
    inputs = tmp_path / "in"
    papers(inputs, {"a.txt": 3, "sub/b.md": 4})
    out_dir = tmp_path / "out"
    cfg = RunConfig(inputs=[str(inputs)], output_dir=out_dir, format="json", timeout=0, raw=True)
    report, out, _ = go(cfg, fake_summarizer)
    assert report.exit_code == 0 and out == ""
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")) == ["a.json", "sub", "sub/b.json"]
    assert json.loads((out_dir / "sub" / "b.json").read_text())["summary"] == " b0 b1 b2"
    report, _, err = go(cfg, NoModel())
    assert [o.status for o in report.outcomes] == ["skipped", "skipped"] and report.exit_code == 0
    assert "0 done, 2 skipped, 0 failed" in err
    report, _, _ = go(RunConfig(inputs=[str(inputs)], output_dir=out_dir, format="json", timeout=0,
                                overwrite=True), fake_summarizer)
    assert [o.status for o in report.outcomes] == ["done", "done"]


def test_an_interrupt_keeps_finished_outputs_and_leaves_no_partial_file(tmp_path, fake_summarizer):
    inputs = tmp_path / "in"
    papers(inputs, {"a.txt": 3, "b.txt": 3, "c.txt": 3})
    out_dir = tmp_path / "out"

    class Interrupted(type(fake_summarizer)):
        def summarize_batch(self, texts, options=None, max_input_tokens=None):
            if texts[0].startswith("b"):
                raise KeyboardInterrupt
            return super().summarize_batch(texts, options, max_input_tokens)

    cfg = RunConfig(inputs=[str(inputs)], output_dir=out_dir, format="md", timeout=0)
    report, _, err = go(cfg, Interrupted())
    assert report.interrupted and report.exit_code == 130
    assert "interrupted; 1 summary written so far are kept" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.md"]  # no temp files either
    (out_dir / ".b.md.x.arxsum-tmp").write_text("half a summ")  # what a SIGKILL could leave
    report, _, _ = go(cfg, fake_summarizer)  # resume
    assert [o.status for o in report.outcomes] == ["skipped", "done", "done"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.md", "b.md", "c.md"]


def test_stdout_follows_input_order_when_batches_are_sorted_by_length(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {"p0.txt": 2, "p1.txt": 30, "p2.txt": 5, "p3.txt": 20, "p4.txt": 1, "p5.txt": 9})
    cfg = RunConfig(inputs=[str(p) for p in paths], format="jsonl", batch_size=4, timeout=0, quiet=True)
    report, out, err = go(cfg, fake_summarizer)
    assert report.exit_code == 0 and err == ""
    assert [json.loads(line)["source"] for line in out.splitlines()] == [str(p) for p in paths]
    assert fake_summarizer.calls == [4, 2]


def test_jsonl_streams_each_line_as_soon_as_its_turn_comes(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3, "c.txt": 4})
    seen_when_called: list[int] = []
    out = io.StringIO()

    class Watching(type(fake_summarizer)):
        def summarize_batch(self, texts, options=None, max_input_tokens=None):
            seen_when_called.append(len(out.getvalue().splitlines()))
            return super().summarize_batch(texts, options, max_input_tokens)

    from rich.console import Console

    run(RunConfig(inputs=[str(p) for p in paths], format="jsonl", timeout=0, quiet=True),
        load_summarizer=Watching, stdin=io.BytesIO(), stdout=out, console=Console(file=io.StringIO()))
    assert seen_when_called == [0, 1, 2]


def test_files_from_stdin_and_text_headers(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3})
    listing = "\n".join(str(p) for p in paths).encode() + b"\n"
    report, out, _ = go(RunConfig(files_from="-", timeout=0, raw=True), fake_summarizer, stdin=listing)
    assert report.exit_code == 0
    assert out == f"==> {paths[0]} <==\n a0 a1\n\n==> {paths[1]} <==\n b0 b1 b2\n"


def test_stdin_text_is_one_input(fake_summarizer):
    report, out, _ = go(RunConfig(inputs=["-"], timeout=0, raw=True), fake_summarizer, stdin=b"one two three four")
    assert report.exit_code == 0 and out == " one two three\n"


def test_truncation_is_reported_on_stderr_and_in_json(tmp_path, fake_summarizer):
    (path,) = papers(tmp_path, {"long.txt": 100})
    report, out, err = go(RunConfig(inputs=[str(path)], format="json", max_input_tokens=10, timeout=0),
                          fake_summarizer)
    record = json.loads(out)
    assert (record["input_tokens"], record["original_tokens"], record["truncated"]) == (10, 102, True)
    assert set(record) >= {"source", "summary", "input_tokens", "truncated", "model", "seconds", "title",
                           "abstract", "original_tokens"}
    assert "truncated from 102 to 10 tokens" in err


def test_more_input_tokens_than_the_model_has_is_an_options_error(tmp_path, fake_summarizer):
    from arxsum.errors import OptionsError

    (path,) = papers(tmp_path, {"a.txt": 3})
    with pytest.raises(OptionsError, match="more than the model's 64"):
        go(RunConfig(inputs=[str(path)], max_input_tokens=65, timeout=0), fake_summarizer)




def oom_summarizer(base, limit: int):
    """A summarizer that runs out of CUDA memory on any batch larger than `limit`."""

    class Oom(type(base)):
        def summarize_batch(self, texts, options=None, max_input_tokens=None):
            self.calls.append(len(texts))
            if len(texts) > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            self.calls.pop()
            return super().summarize_batch(texts, options, max_input_tokens)

    return Oom()


def test_cuda_oom_halves_the_batch_and_every_paper_still_gets_its_summary(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {f"p{i}.txt": 10 + i for i in range(8)})
    summarizer = oom_summarizer(fake_summarizer, limit=2)
    cfg = RunConfig(inputs=[str(p) for p in paths], format="jsonl", batch_size=8, timeout=0)
    report, out, err = go(cfg, summarizer)
    assert report.exit_code == 0
    assert [json.loads(line)["source"] for line in out.splitlines()] == [str(p) for p in paths]
    # 8 fails, 4 fails, 2 fits (x2), then the batch size stays at 2 for the other half
    assert summarizer.calls == [8, 4, 2, 2, 2, 2]
    assert "CUDA out of memory with a batch of 8; retrying with 4" in err
    assert "retrying with 2" in err


def test_a_paper_that_runs_out_of_memory_alone_fails_alone(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {"a.txt": 3, "b.txt": 4})
    summarizer = oom_summarizer(fake_summarizer, limit=0)
    report, _, _ = go(RunConfig(inputs=[str(p) for p in paths], batch_size=2, timeout=0), summarizer)
    assert report.exit_code == 1
    assert all("out of memory even alone" in o.reason for o in report.outcomes)


def test_an_unexpected_model_error_fails_only_that_paper(tmp_path, fake_summarizer, monkeypatch):
    monkeypatch.delenv("ARXSUM_DEBUG", raising=False)
    paths = papers(tmp_path, {"a.txt": 3, "bad.txt": 4, "c.txt": 5})

    class Picky(type(fake_summarizer)):
        def summarize_batch(self, texts, options=None, max_input_tokens=None):
            if any(t.startswith("bad") for t in texts):
                raise RuntimeError("index out of range in self")
            return super().summarize_batch(texts, options, max_input_tokens)

    report, out, _ = go(RunConfig(inputs=[str(p) for p in paths], batch_size=3, timeout=0, format="jsonl"),
                        Picky())
    assert [o.status for o in report.outcomes] == ["done", "failed", "done"]
    assert report.outcomes[1].reason == "index out of range in self"  # in words, no class name
    assert len(out.splitlines()) == 2


def test_gpu_batch_size_comes_from_free_memory(monkeypatch):
    class Gpu:
        device = "cuda:0"

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    per_paper = estimate_paper_bytes(16384, num_beams=5)
    assert per_paper == 16 * 16384 * 768 * 4  # the encoder's phase is the larger here: ~0.8 GB in float32
    # bfloat16, 16384 tokens, 5 beams, 320 steps: 365 MB a paper measured on an H200 (make gpu-check);
    # the estimate must stay above it without wasting the card
    assert 365e6 < estimate_paper_bytes(16384, num_beams=5, bytes_per_value=2) < 1.2 * 365e6
    assert estimate_paper_bytes(100, num_beams=5) > 6 * 2 * 100 * 768 * 4 + 2 * 6 * 2 * 5 * 320 * 768 * 4 - 1
    from arxsum.decoding import GenerationOptions

    assert default_batch_size(Gpu(), 16384, GenerationOptions()) == int(0.7 * 40 * 2**30 // per_paper)
    assert default_batch_size(type("Cpu", (), {"device": "cpu"})(), 16384, GenerationOptions()) == 1


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3})
    _, _, err = go(RunConfig(inputs=[str(p) for p in paths], timeout=0), fake_summarizer)
    assert f"arxsum: [1/2] {paths[0]}: done" in err and f"arxsum: [2/2] {paths[1]}: done" in err
    _, _, err = go(RunConfig(inputs=[str(p) for p in paths], timeout=0, quiet=True), fake_summarizer)
    assert err == ""


def test_rich_progress_when_stderr_is_a_terminal(tmp_path, fake_summarizer):
    from rich.console import Console

    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3, "c.txt": 1})
    err = io.StringIO()
    console = Console(file=err, force_terminal=True, width=100)
    assert type(Progress.create(console, quiet=False, total=3)).__name__ == "RichProgress"
    report = run(RunConfig(inputs=[str(p) for p in paths], timeout=0), load_summarizer=lambda: fake_summarizer,
                 stdin=io.BytesIO(), stdout=io.StringIO(), console=console)
    assert report.exit_code == 0 and "3 done, 0 skipped, 0 failed" in err.getvalue()


def test_output_file_is_written_whole_and_not_at_all_when_nothing_was_summarized(tmp_path, fake_summarizer):
    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3})
    target = tmp_path / "out" / "all.jsonl"
    report, out, _ = go(RunConfig(inputs=[str(p) for p in paths], output=target, format="jsonl", timeout=0),
                        fake_summarizer)
    assert report.exit_code == 0 and out == ""
    assert len(target.read_text().splitlines()) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    report, _, _ = go(RunConfig(inputs=[str(empty)], output=tmp_path / "none.txt", timeout=0), fake_summarizer)
    assert report.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "empty.txt", "out"]


def test_a_summary_that_cannot_be_written_fails_that_paper_only(tmp_path, fake_summarizer):
    paths = papers(tmp_path / "in", {"a.txt": 2, "b.txt": 3})
    out_dir = tmp_path / "out"
    (out_dir / "a.json").mkdir(parents=True)  # something in the way of a's summary
    (out_dir / "a.json" / "x").write_text("")
    cfg = RunConfig(inputs=[str(p) for p in paths], output_dir=out_dir, format="json", timeout=0,
                    overwrite=True)
    report, _, _ = go(cfg, fake_summarizer)
    assert [o.status for o in report.outcomes] == ["failed", "done"]
    assert report.outcomes[0].reason.startswith("cannot write its summary")
    assert not list(out_dir.glob(".*arxsum-tmp"))


def test_without_raw_the_model_sees_training_text_and_the_summary_comes_back_as_prose(tmp_path, fake_summarizer):
    path = tmp_path / "p.txt"
    path.write_text("GAIL cites [12] here and more words follow")
    _, raw_out, _ = go(RunConfig(inputs=[str(path)], raw=True, timeout=0), fake_summarizer)
    assert raw_out == " GAIL cites [12]\n"  # --raw: the text untouched in, the summary untouched out
    _, out, _ = go(RunConfig(inputs=[str(path)], timeout=0), fake_summarizer)
    assert out.lower() == "gail cites\n"  # @xcite dropped, sentence-cased


@pytest.mark.parametrize("reason,shown", [("no C compiler (gcc or $CC)", True),
                                          ("turned off by ARXSUM_CPU_KERNELS=0", False), (None, False)])
def test_a_cpu_run_without_the_kernels_says_why(tmp_path, fake_summarizer, monkeypatch, reason, shown):
    from types import SimpleNamespace

    from arxsum import cpukernels

    monkeypatch.setattr(cpukernels, "unavailable_reason", lambda: reason)
    fake_summarizer.model = SimpleNamespace(kernels=None if reason else object())
    paths = papers(tmp_path, {"a.txt": 5})
    _, out, err = go(RunConfig(inputs=[str(p) for p in paths], timeout=0), fake_summarizer)
    assert out.strip() and ("without the CPU kernels" in err) == shown
    if shown:
        assert "no C compiler" in err and err.count("CPU kernels") == 1


def test_a_live_line_on_a_terminal_says_what_happens_and_stdout_has_only_summaries(tmp_path, fake_summarizer):
    from rich.console import Console

    paths = papers(tmp_path, {"a.txt": 30})
    seen = []

    class Stepping(type(fake_summarizer)):
        def summarize_batch(self, texts, options=None, max_input_tokens=None, on_step=None):
            for length in range(2, 12):
                on_step(length)
                seen.append(length)
                time.sleep(0.06)
            return super().summarize_batch(texts, options, max_input_tokens)

    err = io.StringIO()
    console = Console(file=err, width=100, force_terminal=True, color_system=None)
    out = io.StringIO()
    report = run(RunConfig(inputs=[str(p) for p in paths], timeout=0, options=GenerationOptions(max_length=11)),
                 load_summarizer=Stepping, stdout=out, console=console)
    assert report.exit_code == 0 and seen == list(range(2, 12))
    assert out.getvalue() == "A0 a1 a2\n"  # the summary alone
    shown = err.getvalue()
    assert "a.txt: decoding " in shown and "/10, " in shown and "s left at most" in shown
    assert "papers" not in shown  # one paper: the line alone, no bar

    plain = io.StringIO()
    run(RunConfig(inputs=[str(p) for p in paths], timeout=0), load_summarizer=Stepping, stdout=io.StringIO(),
        console=Console(file=plain, width=100, color_system=None))
    assert "decoding" not in plain.getvalue()  # not a terminal: no live line


# -- issue 19: extraction sized to the model's device, and the model's wait for input -----------

@pytest.mark.parametrize("cores, device, workers", [
    (2, "cpu", 2), (8, "cpu", 4), (16, "cpu", 4), (2, "cuda", 2), (4, "cuda:0", 2), (8, "cuda", 6),
    (16, "cuda:1", 14), (64, "cuda", 62)])
def test_extraction_workers_by_cores_and_device(monkeypatch, cores, device, workers):
    from arxsum import runner

    monkeypatch.setattr(runner, "usable_cores", lambda: cores)
    assert runner.default_workers(device) == workers


def test_auto_device_is_known_before_the_model_loads(monkeypatch):
    import sys

    from arxsum import runner

    assert runner.model_device("cpu") == "cpu" and runner.model_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runner.model_device("auto") == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runner.model_device("auto") == "cpu"
    monkeypatch.setitem(sys.modules, "torch", None)  # not imported yet, and no NVIDIA driver: no import
    monkeypatch.setattr(runner, "nvidia_driver_present", lambda: False)
    assert runner.model_device("auto") == "cpu"


def record_workers(monkeypatch) -> list[int]:
    from arxsum import runner

    seen: list[int] = []
    real = runner.Extractor

    def extractor(*args, workers, **kwargs):
        seen.append(workers)
        return real(*args, workers=workers, **kwargs)

    monkeypatch.setattr(runner, "Extractor", extractor)
    return seen


def test_a_run_sizes_extraction_for_the_models_device(tmp_path, fake_summarizer, monkeypatch):
    from arxsum import runner

    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3})
    monkeypatch.setattr(runner, "usable_cores", lambda: 16)
    seen = record_workers(monkeypatch)
    for device, workers in (("cuda", None), ("cpu", None), ("cuda", 3)):
        report, _, _ = go(RunConfig(inputs=[str(p) for p in paths], timeout=0, device=device, workers=workers),
                          fake_summarizer)
        assert report.exit_code == 0
    assert seen == [14, 4, 3]  # explicit workers win


def slow_extraction(monkeypatch, seconds: float) -> None:
    from arxsum import sources

    real = sources.extract_paper

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "extract_paper", slow)


def test_the_models_wait_for_extraction_is_one_line_at_the_end(tmp_path, fake_summarizer, monkeypatch):
    import re

    paths = papers(tmp_path, {"a.txt": 2, "b.txt": 3, "c.txt": 4})
    slow_extraction(monkeypatch, 0.3)
    cfg = RunConfig(inputs=[str(p) for p in paths], timeout=0, workers=1, device="cpu")
    report, _, err = go(cfg, fake_summarizer)
    lines = [ln for ln in err.splitlines() if "the model waited" in ln]
    assert len(lines) == 1 and err.index(lines[0]) > err.index("[3/3]")
    m = re.fullmatch(r"arxsum: the model waited (\d+\.\d) s for extraction \((\d+)% of the (\d+\.\d) s since it loaded\)",
                     lines[0])
    assert m, lines[0]
    assert 0.5 <= report.model_wait_s <= report.model_s and float(m.group(1)) == round(report.model_wait_s, 1)
    assert int(m.group(2)) >= 50  # the fake model takes no time: it mostly waited
    _, _, err = go(RunConfig(inputs=[str(p) for p in paths], timeout=0, workers=1, quiet=True), fake_summarizer)
    assert err == ""
    report, _, err = go(RunConfig(inputs=[str(paths[0])], timeout=0), fake_summarizer)
    assert "waited" not in err and report.model_wait_s == 0.0  # one paper: nothing to say


def test_extraction_borrows_the_local_models_tokenizer_and_cuts_pages_only_for_cuda(tmp_path, monkeypatch):
    import json as json_

    from arxsum.runner import extract_options

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json_.dumps({"max_position_embeddings": 4096}))
    cpu = extract_options(RunConfig(model=str(model), device="cpu"))
    assert cpu.tokenizer_dir == str(model) and cpu.token_limit is None
    cuda = extract_options(RunConfig(model=str(model), device="cuda", max_input_tokens=1000))
    assert cuda.tokenizer_dir == str(model) and cuda.token_limit == 1000
    assert extract_options(RunConfig(model=str(model), device="cuda")).token_limit == 4096
    assert extract_options(RunConfig(model=str(model), device="cuda", page_cut=False)).token_limit is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = extract_options(RunConfig(model="nobody/no-such-model", device="cuda"))
    assert missing.tokenizer_dir is None and missing.token_limit is None  # not in the cache: not downloaded
