"""CUDA checks, run by `make gpu-check` on a GPU machine (deselected from `make test`)."""

from __future__ import annotations

import pytest
import torch

from arxsum import GenerationOptions, Summarizer
from builders import build_tiny_checkpoint, real_architecture_config, write_checkpoint

pytestmark = pytest.mark.gpu

TEXTS = ["we study the dynamics of a driven quantum system coupled to a thermal bath . " * 20,
         "neural networks trained with stochastic gradient descent generalize well . " * 3,
         "transformer models are limited by the quadratic cost of attention . " * 50]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.fail("make gpu-check needs a CUDA device")
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def test_cuda_float32_equals_cpu(tiny):
    cpu = Summarizer.from_pretrained(tiny, device="cpu", dtype="float32")
    gpu = Summarizer.from_pretrained(tiny, device="cuda", dtype="float32")
    opts = GenerationOptions(num_beams=5, max_length=40, min_length=8)
    ids = torch.tensor([cpu.encode(TEXTS[0]).ids])
    with torch.inference_mode():
        a = cpu.model(ids, None, ids[:, :6])
        b = gpu.model(ids.cuda(), None, ids[:, :6].cuda()).cpu()
    torch.testing.assert_close(a, b, atol=5e-4, rtol=1e-4)
    assert [s.token_ids for s in cpu.summarize_batch(TEXTS, opts)] == \
        [s.token_ids for s in gpu.summarize_batch(TEXTS, opts)]


@pytest.mark.parametrize("eos_bias", [0.0, 5.0])
def test_cuda_graphs_search_like_eager_cuda_steps(tiny, monkeypatch, eos_bias):
    """Also when documents finish apart (a raised EOS logit): the batch shrinks, graphs are captured again."""
    from arxsum import decoding

    gpu = Summarizer.from_pretrained(tiny, device="cuda", dtype="float32")
    gpu.model.final_logits_bias[0, gpu.special.eos] += eos_bias
    texts = TEXTS + ["graphs of kernels replay in one launch . " * 5]
    opts = GenerationOptions(num_beams=5, max_length=40, min_length=2)
    compacted = []
    compact = decoding.GraphedDecoderState._compact
    monkeypatch.setattr(decoding.GraphedDecoderState, "_compact",
                        lambda self: (compacted.append(len(self.active)), compact(self)))
    graphed = gpu.summarize_batch(texts, opts)
    monkeypatch.setattr(decoding, "graphed", lambda device: False)
    eager = gpu.summarize_batch(texts, opts)
    assert [s.token_ids for s in graphed] == [s.token_ids for s in eager]
    # with 5.0 the tiny model's float32 summaries end after 3, 5, 40 and 40 tokens (as on the CPU):
    # two documents finish, the batch is compacted to the other two, the graphs captured again
    assert bool(compacted) == (eos_bias > 0), ([len(s.token_ids) for s in eager], compacted)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_half_precision_runs(tiny, dtype):
    gpu = Summarizer.from_pretrained(tiny, device="cuda", dtype=dtype)
    out = gpu.summarize_batch(TEXTS, GenerationOptions(num_beams=5, max_length=30, min_length=5))
    assert all(len(s.token_ids) >= 5 for s in out)


def test_real_architecture_batch_at_16k_tokens(tmp_path):
    if not torch.cuda.is_available():
        pytest.fail("make gpu-check needs a CUDA device")
    from arxsum.decoding import GenerationOptions as Opts
    from arxsum.decoding import beam_search
    from arxsum.loading import load_model

    write_checkpoint(tmp_path, real_architecture_config(init_std=0.1))
    model = load_model(tmp_path, torch.device("cuda"), torch.bfloat16)
    c = model.config
    from arxsum.decoding import SpecialTokens

    special = SpecialTokens(c.decoder_start_token_id, c.eos_token_id, c.pad_token_id, c.forced_bos_token_id,
                            c.forced_eos_token_id)
    ids = torch.randint(5, c.vocab_size, (4, 16384), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    out = beam_search(model, ids, torch.ones_like(ids), Opts(num_beams=5, max_length=16, min_length=16), special)
    assert [len(o) for o in out] == [16] * 4
    assert torch.cuda.max_memory_allocated() < 40 * 2**30


def test_cuda_refill_in_captured_graphs_gives_each_paper_its_own_summary(tiny):
    """Continuous batching on CUDA: papers join a running batch of captured graphs (written into its
    buffers in place); each summary equals the paper's summary alone, in float32."""
    from arxsum import decoding

    gpu = Summarizer.from_pretrained(tiny, device="cuda", dtype="float32")
    gpu.model.final_logits_bias[0, gpu.special.eos] += 5.5  # summaries end apart
    texts = [TEXTS[i % 3][: 40 + 37 * i] for i in range(9)]
    opts = GenerationOptions(num_beams=4, max_length=30, min_length=2)
    alone = [gpu.summarize_batch([t], opts)[0].token_ids for t in texts]
    joined = []
    refill = decoding.GraphedDecoderState.refill
    decoding.GraphedDecoderState.refill = lambda self, blocks, enc: (joined.extend(blocks), refill(self, blocks, enc))[1]
    try:
        got = dict(gpu.summarize_stream(texts, opts, batch_size=3))
    finally:
        decoding.GraphedDecoderState.refill = refill
    assert [got[i].token_ids for i in range(len(texts))] == alone
    assert joined and len({len(t) for t in alone}) > 1
