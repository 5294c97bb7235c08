"""Continuous batching (issue 19): when documents of a batch finish while others still search, the
next documents take their rows. Each must get the summary it gets alone, token for token in float32,
on every decoding path: the eager state with copied caches (the tiny model: heads too narrow for the
kernels), the CPU kernels' ancestry table (64-wide heads), and the fixed shapes of CUDA graphs (run
here without capture)."""

from __future__ import annotations

import copy

import pytest
import torch

from arxsum import GenerationOptions, Summarizer, decoding
from arxsum.decoding import SpecialTokens, beam_search, search
from arxsum.model import LSGBartConfig, LSGBartForConditionalGeneration
from builders import random_state_dict, real_architecture_config

OPTIONS = [
    GenerationOptions(num_beams=4, max_length=30, min_length=2),
    GenerationOptions(num_beams=3, max_length=24, min_length=4, no_repeat_ngram_size=2, length_penalty=1.0),
    GenerationOptions(num_beams=1, max_length=20, min_length=0),
]
OPTION_IDS = ["4-beams", "3-beams-ngram-min-length", "greedy"]


def documents(vocab: int, lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for n in lengths:
        ids = torch.randint(5, vocab, (n,), generator=gen)
        ids[0], ids[-1] = 0, 2
        docs.append(ids)
    return docs


def padded(docs: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(docs), max(len(d) for d in docs)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, d in enumerate(docs):
        ids[i, : len(d)], mask[i, : len(d)] = d, 1
    return ids, mask


class Refills:
    """Counts the rows a refill handed over and the rows each step ran."""

    def __init__(self, monkeypatch, kind) -> None:
        self.blocks: list[int] = []
        self.rows: list[int] = []
        refill, step = kind.refill, kind.step
        monkeypatch.setattr(kind, "refill", lambda state, blocks, enc: (self.blocks.extend(blocks),
                                                                       refill(state, blocks, enc))[1])
        monkeypatch.setattr(kind, "step", lambda state, tokens: (self.rows.append(len(tokens)), step(state, tokens))[1])


def streamed(model, docs, batch: int, options, special) -> dict[int, list[int]]:
    """search() over docs in order: `batch` together, the next ones taking the rows that free up; a
    new batch when all of one have finished at once."""
    waiting = list(range(len(docs)))
    got: dict[int, list[int]] = {}
    while waiting:
        order = waiting[:batch]  # search's document numbers -> index in docs
        del waiting[:batch]

        def more(n: int, longest: int, order=order) -> list[torch.Tensor]:
            out = []
            while waiting and len(out) < n and len(docs[waiting[0]]) <= longest:
                order.append(waiting.pop(0))
                out.append(docs[order[-1]])
            return out

        ids, mask = padded([docs[i] for i in order], special.pad)
        got.update({order[d]: tokens for d, tokens in search(model, ids, mask, options, special, more=more)})
    return got


def alone(model, docs, options, special) -> list[list[int]]:
    return [beam_search(model, d[None], torch.ones_like(d)[None], options, special)[0] for d in docs]


def raised_eos(model, bias: float):
    model = copy.deepcopy(model)
    model.final_logits_bias[0, model.config.eos_token_id] += bias  # documents stop at different steps
    return model


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return Summarizer.from_pretrained(tiny_model_dir, device="cpu", dtype="float32").model


@pytest.fixture(scope="module")
def wide_model():
    """64-wide heads, so that the CPU kernels run the decoder layers (ancestry table, per-row positions)."""
    config = real_architecture_config(vocab_size=300, d_model=128, encoder_attention_heads=2,
                                      decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                      encoder_layers=1, decoder_layers=2, max_position_embeddings=1024,
                                      init_std=0.1)
    model = LSGBartForConditionalGeneration(LSGBartConfig.from_dict(config))
    model.load_state_dict(random_state_dict(config, seed=5))
    return model.eval()


@pytest.fixture(autouse=True)
def uninitialized_memory_is_nan():
    """torch.empty's memory filled with NaN (integers: their largest value), so that a step reading memory
    nothing wrote fails every time, not only when the heap happens to hold a NaN there (the eager
    refill once failed 1 run in 3 that way: keep_documents' spare caches were torch.empty)."""
    import torch.utils.deterministic as deterministic

    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)  # the filling only happens in this mode
    deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        deterministic.fill_uninitialized_memory = fill
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def special_of(model) -> SpecialTokens:
    c = model.config
    return SpecialTokens(c.decoder_start_token_id, c.eos_token_id, c.pad_token_id, c.forced_bos_token_id,
                         c.forced_eos_token_id)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "fixed-shapes"])
def test_refilled_batch_gives_each_document_its_own_summary(tiny_model, monkeypatch, options, graphed):
    model = raised_eos(tiny_model, 5.5)
    special = special_of(model)
    docs = documents(model.config.vocab_size, [120, 90, 100, 60, 80, 40, 70, 30, 50, 20])
    want = alone(model, docs, options, special)
    assert len({len(t) for t in want}) > 1  # they do end apart
    if graphed:
        monkeypatch.setattr(decoding, "graphed", lambda device: True)
    kind = decoding.GraphedDecoderState if graphed else decoding.DecoderState
    seen = Refills(monkeypatch, kind)
    with torch.inference_mode():
        got = streamed(model, docs, 3, options, special)
    assert [got[i] for i in range(len(docs))] == want
    assert seen.blocks  # later documents took finished ones' rows


@pytest.mark.parametrize("eos_bias", [2.0, 2.5])
def test_refill_with_the_kernels_ancestry_and_per_row_positions(wide_model, monkeypatch, eos_bias):
    from arxsum import cpukernels

    kernels = cpukernels.load()
    if kernels is None:
        pytest.skip(f"no CPU kernels here: {cpukernels.unavailable_reason()}")
    model = raised_eos(wide_model, eos_bias)
    special = special_of(model)
    options = GenerationOptions(num_beams=5, max_length=40, min_length=2)
    docs = documents(model.config.vocab_size, [600, 400, 520, 300, 350, 200, 450, 100], seed=1)
    model.use_kernels(kernels)
    assert model.model.decoder.layers[0].fused is not None
    try:
        seen = Refills(monkeypatch, decoding.DecoderState)
        with torch.inference_mode():
            want = alone(model, docs, options, special)
            got = streamed(model, docs, 3, options, special)
    finally:
        model.use_kernels(None)
    assert len({len(t) for t in want}) > 1
    assert [got[i] for i in range(len(docs))] == want
    assert seen.blocks


def test_the_batch_stays_full_while_documents_wait(tiny_model, monkeypatch):
    """Every step runs batch x beams rows until the last document has joined."""
    model = raised_eos(tiny_model, 5.5)
    special = special_of(model)
    options = GenerationOptions(num_beams=2, max_length=30, min_length=2)
    docs = documents(model.config.vocab_size, [100, 90, 80, 70, 60, 50, 40, 30, 25, 20], seed=2)
    seen = Refills(monkeypatch, decoding.DecoderState)
    joined_at: list[int] = []
    refill = decoding.DecoderState.refill
    monkeypatch.setattr(decoding.DecoderState, "refill",
                        lambda state, blocks, enc: (joined_at.append(len(seen.rows)), refill(state, blocks, enc))[1])
    with torch.inference_mode():
        streamed(model, docs, 2, options, special)
    assert len(joined_at) >= 3
    assert all(rows == 4 for rows in seen.rows[: joined_at[-1]])


def test_a_longer_document_waits_for_the_next_batch(tiny_model_dir):
    """summarize_stream: a text longer than the running batch's longest starts a later batch; all
    summaries still equal those of each text alone, and come with their indices."""
    summarizer = Summarizer.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    texts = ["graphs of kernels replay in one launch . " * 3, "a short one .",
             "neural networks trained with stochastic gradient descent generalize well . " * 2,
             "the abstract of a paper is a short summary of its contents . " * 20, "and another ."]
    options = GenerationOptions(num_beams=3, max_length=20, min_length=1)
    want = [summarizer.summarize_batch([t], options)[0].token_ids for t in texts]
    calls = []
    original = decoding.search

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        yield from original(*args, **kwargs)

    from arxsum import summarizer as summarizer_module
    summarizer_module.search = counting
    try:
        got = dict(summarizer.summarize_stream(texts, options, batch_size=2))
    finally:
        summarizer_module.search = original
    assert sorted(got) == list(range(len(texts)))
    assert [got[i].token_ids for i in range(len(texts))] == want
    assert len(calls) >= 2  # the long fourth text could not join the first batch


# ---- the runner: a folder in continuous batches ------------------------------------------------------

def run_folder(tmp_path, summarizer, batch_size: int, texts: list[str], name: str, refill: bool = True):
    import io
    import json

    from rich.console import Console

    from arxsum.runner import RunConfig, run

    folder = tmp_path / name
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"p{i:02d}.txt").write_text(text)
    out, err = io.StringIO(), io.StringIO()
    cfg = RunConfig(inputs=[str(folder)], format="jsonl", batch_size=batch_size, timeout=0, raw=True, refill=refill)
    report = run(cfg, load_summarizer=lambda: summarizer, stdin=io.BytesIO(), stdout=out,
                 console=Console(file=err, width=200, color_system=None))
    return report, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_a_folder_in_continuous_batches_gets_the_summaries_of_one_at_a_time(tiny_model_dir, tmp_path, monkeypatch):
    summarizer = Summarizer.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    summarizer.model.final_logits_bias[0, summarizer.special.eos] += 5.5  # summaries end apart
    words = "we study the dynamics of a driven quantum system and neural networks generalize well".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(10 + 37 * i % 120)) for i in range(12)]
    _, one, _ = run_folder(tmp_path, summarizer, 1, texts, "one")
    seen = Refills(monkeypatch, decoding.DecoderState)
    report, batched, _ = run_folder(tmp_path, summarizer, 3, texts, "batched")
    assert report.exit_code == 0
    assert [r["source"].rsplit("/", 1)[-1] for r in batched] == [f"p{i:02d}.txt" for i in range(12)]  # input order
    assert [r["summary"] for r in batched] == [r["summary"] for r in one]
    assert len({r["summary"] for r in one}) > 1 and seen.blocks  # papers joined running batches
    joined = len(seen.blocks)
    _, drained, _ = run_folder(tmp_path, summarizer, 3, texts, "drained", refill=False)  # RunConfig(refill=False)
    assert [r["summary"] for r in drained] == [r["summary"] for r in one] and len(seen.blocks) == joined


class StreamingFake:
    """The fake summarizer with summarize_stream: batches of batch_size refilled one paper at a time,
    summaries in the order papers finish (shortest first within what is in flight)."""

    def __new__(cls, base, fail_on: str | None = None, oom_above: int | None = None):
        class Streaming(type(base)):
            def summarize_stream(self, texts, options=None, max_input_tokens=None, batch_size=1, on_step=None):
                self.calls.append(batch_size)
                if oom_above is not None and batch_size > oom_above:
                    next(iter(texts), None)
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                flight: list[tuple[int, str]] = []
                source = enumerate(texts)
                while True:
                    while len(flight) < batch_size and (nxt := next(source, None)) is not None:
                        if fail_on and nxt[1].startswith(fail_on):
                            raise RuntimeError("index out of range in self")
                        flight.append(nxt)
                    if not flight:
                        return
                    flight.sort(key=lambda t: len(t[1]))
                    i, text = flight.pop(0)
                    yield i, self.summarize_batch([text], options, max_input_tokens)[0]

            def summarize_batch(self, texts, options=None, max_input_tokens=None):
                if fail_on and any(t.startswith(fail_on) for t in texts):
                    raise RuntimeError("index out of range in self")
                return super().summarize_batch(texts, options, max_input_tokens)

        return Streaming()


def fake_folder(tmp_path, summarizer, batch_size: int, names: dict[str, int]):
    import io
    import json

    from rich.console import Console

    from arxsum.runner import RunConfig, run

    paths = []
    for name, n in names.items():
        path = tmp_path / name
        path.write_text(" ".join(f"{path.stem}{i}" for i in range(n)))
        paths.append(path)
    out, err = io.StringIO(), io.StringIO()
    cfg = RunConfig(inputs=[str(p) for p in paths], format="jsonl", batch_size=batch_size, timeout=0)
    report = run(cfg, load_summarizer=lambda: summarizer, stdin=io.BytesIO(), stdout=out,
                 console=Console(file=err, width=200, color_system=None))
    return report, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue(), paths


def test_streamed_cuda_oom_halves_the_batch_and_every_paper_gets_one_summary(tmp_path, fake_summarizer):
    summarizer = StreamingFake(fake_summarizer, oom_above=2)
    report, out, err, paths = fake_folder(tmp_path, summarizer, 8, {f"p{i}.txt": 10 + i for i in range(8)})
    assert report.exit_code == 0
    assert [r["source"] for r in out] == [str(p) for p in paths]
    assert [c for c in summarizer.calls if c > 1] == [8, 4, 2]  # streams; the 1s are the papers themselves
    assert "CUDA out of memory with a batch of 8; retrying with 4" in err and "retrying with 2" in err


def test_a_paper_that_breaks_a_streamed_batch_fails_alone(tmp_path, fake_summarizer, monkeypatch):
    monkeypatch.delenv("ARXSUM_DEBUG", raising=False)
    summarizer = StreamingFake(fake_summarizer, fail_on="bad")
    names = {"a.txt": 3, "b.txt": 9, "bad.txt": 4, "c.txt": 5, "d.txt": 6, "e.txt": 7}
    report, out, _, _ = fake_folder(tmp_path, summarizer, 2, names)
    assert [o.status for o in report.outcomes] == ["done", "done", "failed", "done", "done", "done"]
    assert report.outcomes[2].reason == "index out of range in self"
    assert len(out) == 5 and len(summarizer.calls) >= 2  # the stream went on after the failure


@pytest.mark.parametrize("batch, refill, streams, want", [
    (1, True, True, 1), (4, True, True, 4), (4, False, True, 32), (4, True, False, 32)])
def test_a_refilled_batch_starts_once_its_own_papers_are_read(fake_summarizer, batch, refill, streams, want):
    """With refill, the runner reads a batch's worth of papers before the model starts (not the
    SORT_WINDOW batches' worth that sorting by length across batches needs)."""
    from arxsum.runner import SORT_WINDOW, Engine, Progress, RunConfig, window_size

    summarizer = StreamingFake(fake_summarizer) if streams else fake_summarizer
    import io

    from rich.console import Console

    progress = Progress(Console(file=io.StringIO()), quiet=True, total=1)
    engine = Engine(RunConfig(batch_size=batch, refill=refill), lambda: summarizer, progress)
    assert engine.summarizer is summarizer
    assert window_size(engine) == want and SORT_WINDOW * 4 == 32
