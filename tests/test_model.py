"""The model and its loading, on tiny checkpoints built in the hub's layout (tests/builders.py).

Parity with the reference implementation lives in test_parity.py; these tests pin our own
invariants: cached = uncached decoding, batched = single, each attention regime, loud loading.
"""

from __future__ import annotations

import json

import pytest
import torch

from arxsum import GenerationOptions, Summarizer
from arxsum.errors import ModelLoadError, OptionsError
from arxsum.loading import load_model, resolve
from arxsum.model import LSGBartConfig, PackedWeight
from arxsum.tokenizer import load_tokenizer
from builders import build_tiny_checkpoint, random_state_dict, tiny_config, train_tokenizer, write_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def summarizer(tiny):
    return Summarizer.from_pretrained(tiny, device="cpu", dtype="float32")


def random_ids(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=gen)
    ids[:, 0], ids[:, -1] = 0, 2
    return ids


def test_cached_decoding_equals_uncached(summarizer):
    model = summarizer.model
    ids = random_ids(2, 100, model.config.vocab_size)
    mask = torch.ones_like(ids)
    dec = random_ids(2, 9, model.config.vocab_size, seed=1)
    with torch.inference_mode():
        full = model(ids, mask, dec)  # (B, L, V), one uncached pass
        enc = model.encode(ids, mask)
        cross, cross_mask = model.cross_kv(enc.hidden), model.cross_mask(enc)
        caches = model.new_caches(2, 16)
        steps = [model.logits(model.decode(dec[:, i: i + 1], cross, cross_mask, caches, start=i))
                 for i in range(dec.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert full.shape == (2, 9, model.config.vocab_size)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_encoder_rows_in_chunks_equal_all_at_once(summarizer, monkeypatch, chunk):
    """On CPU the encoder layers' row-wise part goes ENCODER_CHUNK rows at a time, in near-even chunks: the
    same as one pass (on a batch too, whose chunks run across the documents), but for the products'
    summation order (a GEMM over 1 or 7 rows is not the one over 600)."""
    import arxsum.model

    model = summarizer.model
    ids = random_ids(2, 300, model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 200:] = 0
    with torch.inference_mode():
        whole = model.encode(ids, mask).hidden
        monkeypatch.setattr(arxsum.model, "ENCODER_CHUNK", chunk)
        sizes = []
        rows = arxsum.model.EncoderLayer._rows
        monkeypatch.setattr(arxsum.model.EncoderLayer, "_rows",
                            lambda self, x, ctx: sizes.append(x.shape[0]) or rows(self, x, ctx))
        chunked = model.encode(ids, mask).hidden
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    per_layer = len(sizes) // model.config.encoder_layers
    assert per_layer == -(-sum(sizes[:per_layer]) // chunk) > 1
    assert max(sizes) <= chunk and 2 * min(sizes) > max(sizes)  # no tiny last chunk


@pytest.mark.parametrize("length", [20, 32, 33, 40, 48, 100, 509])
def test_padded_batch_equals_single_documents(summarizer, length):
    """Lengths cover full attention (<= 2 blocks), local attention, and adaptive padding."""
    model = summarizer.model
    long = random_ids(1, length, model.config.vocab_size)
    short = random_ids(1, max(3, length // 3), model.config.vocab_size, seed=2)
    batch = torch.full((2, length), model.config.pad_token_id)
    batch[0], batch[1, : short.shape[1]] = long[0], short[0]
    mask = (torch.arange(length)[None] < torch.tensor([[length], [short.shape[1]]])).long()
    dec = random_ids(2, 5, model.config.vocab_size, seed=3)
    with torch.inference_mode():
        together = model(batch, mask, dec)
        alone = [model(long, None, dec[:1]), model(short, None, dec[1:])]
    torch.testing.assert_close(together[0], alone[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1], alone[1][0], atol=1e-5, rtol=1e-5)


def test_each_block_sees_only_its_neighbours_and_the_globals(tmp_path):
    """One encoder layer: block 0 sees blocks 0 and 1 (and the globals), never block 2 or beyond."""
    write_checkpoint(tmp_path, tiny_config(300, encoder_layers=1))
    model = load_model(tmp_path, CPU, torch.float32)
    bs, g = model.config.block_size, model.config.num_global_tokens
    ids = random_ids(1, 8 * bs, 300)

    def block0_after_changing(position: int) -> torch.Tensor:
        changed = ids.clone()
        changed[0, position] = 7 if changed[0, position] != 7 else 8
        with torch.inference_mode():
            return model.encode(changed, torch.ones_like(ids)).hidden[0, g: g + bs]

    with torch.inference_mode():
        base = model.encode(ids, torch.ones_like(ids)).hidden[0, g: g + bs]
    torch.testing.assert_close(block0_after_changing(2 * bs + 1), base, atol=1e-6, rtol=0)
    torch.testing.assert_close(block0_after_changing(7 * bs + 3), base, atol=1e-6, rtol=0)
    assert (block0_after_changing(bs + 1) - base).abs().max() > 1e-4  # the right neighbour counts


def test_summaries_batched_equal_single(summarizer):
    texts = ["we study the dynamics of a driven quantum system . " * 12,
             "neural networks trained with stochastic gradient descent generalize well .",
             "the abstract of a paper is a short summary of its contents . " * 30]
    opts = GenerationOptions(num_beams=3, max_length=24, min_length=4)
    together = summarizer.summarize_batch(texts, opts)
    alone = [summarizer.summarize_batch([t], opts)[0] for t in texts]
    assert [s.token_ids for s in together] == [s.token_ids for s in alone]
    assert len({tuple(s.token_ids) for s in together}) > 1  # different inputs, different outputs


def test_truncation_keeps_eos_last_and_is_reported(summarizer):
    text = "the method is applied to a two - level system . " * 40
    s = summarizer.summarize_batch([text], GenerationOptions(num_beams=2, max_length=10, min_length=0),
                                   max_input_tokens=64)[0]
    assert s.truncated and s.input_tokens == 64 and s.original_tokens > 64
    enc = summarizer.encode(text, 64)
    assert enc.ids[-1] == summarizer.model.config.eos_token_id and enc.ids[0] == 0


def test_max_input_tokens_above_the_model_is_an_error(summarizer):
    with pytest.raises(OptionsError, match="more than the model's 512 positions"):
        summarizer.summarize_batch(["text"], max_input_tokens=513)


def test_generation_values_in_config_json_are_ignored(summarizer):
    """The tiny config carries num_beams 4, no_repeat_ngram_size 3 ...: only our options count."""
    text = "we study the dynamics of a driven quantum system coupled to a thermal bath . " * 5
    blocked = summarizer.summarize_batch([text], GenerationOptions(num_beams=2, max_length=40, min_length=30,
                                                                   no_repeat_ngram_size=2))[0]
    free = summarizer.summarize_batch([text], GenerationOptions(num_beams=2, max_length=40, min_length=30))[0]
    assert blocked.token_ids != free.token_ids
    bigrams = list(zip(free.token_ids, free.token_ids[1:]))
    assert len(bigrams) != len(set(bigrams))  # the default really does not block repeats


def test_pytorch_bin_and_safetensors_load_the_same(tmp_path):
    tok = train_tokenizer(tmp_path / "tok")
    vocab = len(json.loads((tok / "vocab.json").read_text()))
    config = tiny_config(vocab)
    a = write_checkpoint(tmp_path / "st", config, fmt="safetensors", seed=5, tokenizer_from=tok)
    b = write_checkpoint(tmp_path / "bin", config, fmt="bin", seed=5, tokenizer_from=tok)
    ma, mb = load_model(a, CPU, torch.float32), load_model(b, CPU, torch.float32)
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    config = tiny_config(300)
    state = random_state_dict(config)
    del state["model.decoder.layers.1.fc2.bias"]
    state["model.encoder.layers.0.extra.weight"] = torch.zeros(2)
    (tmp_path / "config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path, CPU, torch.float32)
    assert "missing keys: model.decoder.layers.1.fc2.bias" in str(err.value)
    assert "unexpected keys: model.encoder.layers.0.extra.weight" in str(err.value)


def test_shape_mismatch_is_named(tmp_path):
    write_checkpoint(tmp_path, tiny_config(300))
    config = json.loads((tmp_path / "config.json").read_text())
    config["encoder_ffn_dim"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model.encoder.layers.0.fc1.weight \(64, 32\) \(expected \(48, 32\)\)"):
        load_model(tmp_path, CPU, torch.float32)


def test_absent_embed_tokens_and_lm_head_are_tied_to_shared(tmp_path):
    config = tiny_config(300)
    state = random_state_dict(config, seed=9)
    shared = state.pop("model.shared.weight")
    state["model.decoder.embed_tokens.weight"] = shared  # only one alias stored
    del state["final_logits_bias"]  # optional in BART checkpoints
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = load_model(tmp_path, CPU, torch.float32)
    assert torch.equal(model.model.shared.weight, shared)
    assert torch.count_nonzero(model.final_logits_bias) == 0


def test_active_sparse_attention_is_a_clear_error():
    with pytest.raises(ValueError, match="sparsity_type 'norm' with sparse_block_size 128 is not supported"):
        LSGBartConfig.from_dict(tiny_config(300, sparsity_type="norm", sparse_block_size=128))
    # a sparsity type with sparse_block_size 0 computes nothing sparse in the reference either
    assert not LSGBartConfig.from_dict(tiny_config(300, sparsity_type="norm", sparse_block_size=0)).uses_sparse_attention


def test_unknown_model_directory_and_offline_hub_give_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found: ./nope"):
        resolve("./nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        Summarizer.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(ModelLoadError) as err:
        resolve("nobody-here/no-such-model-xyz")
    assert "--model DIR" in str(err.value) and "\n" not in str(err.value)


def test_missing_or_broken_tokenizer_files_give_one_line(tmp_path):
    tok = train_tokenizer(tmp_path / "tok")
    with pytest.raises(ModelLoadError, match="has no tokenizer files"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer in") as err:
        load_tokenizer(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "merges.txt").write_bytes((tok / "merges.txt").read_bytes())
    vocab = json.loads((tok / "vocab.json").read_text())
    del vocab["</s>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelLoadError, match="lacks the special token"):
        load_tokenizer(tmp_path)


def test_tokenizer_follows_the_configs_prefix_space(tmp_path):
    """As BartTokenizerFast does: tokenizer_config.json's add_prefix_space wins over tokenizer.json's."""
    tok = train_tokenizer(tmp_path / "tok")
    plain = load_tokenizer(tok)
    (tok / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True}))
    prefixed = load_tokenizer(tok)
    assert plain.encode("the model") != prefixed.encode("the model") == plain.encode(" the model")
    assert prefixed.encode("<s>") == plain.encode("<s>") == [0, 0, 2]  # a special token takes no prefix


@pytest.mark.parametrize("device,dtype,message", [("tpu", "auto", "unknown device|unsupported device"),
                                                   ("cpu", "float16", "float16 is for GPUs"),
                                                   ("cpu", "int8", "unknown dtype")])
def test_bad_device_or_dtype(tiny, device, dtype, message):
    with pytest.raises(OptionsError, match=message):
        Summarizer.from_pretrained(tiny, device=device, dtype=dtype)


def test_bfloat16_runs_and_mostly_agrees(summarizer, tiny):
    bf16 = Summarizer.from_pretrained(tiny, device="cpu", dtype="bfloat16")
    assert bf16.model.model.shared.weight.dtype == torch.bfloat16
    ids = random_ids(1, 80, bf16.model.config.vocab_size)
    with torch.inference_mode():
        a = summarizer.model(ids, None, ids[:, :4]).float()
        b = bf16.model(ids, None, ids[:, :4]).float()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.75


def test_fixed_shape_steps_equal_growing_cache_steps(summarizer):
    """The CUDA-graph form of a step (a 0-d tensor position, the whole zeroed cache under a mask)
    gives the logits of the plain cached step."""
    model = summarizer.model
    ids = random_ids(2, 100, model.config.vocab_size)
    dec = random_ids(2, 9, model.config.vocab_size, seed=1)
    with torch.inference_mode():
        enc = model.encode(ids, torch.ones_like(ids))
        cross, cross_mask = model.cross_kv(enc.hidden), model.cross_mask(enc)
        plain, fixed = model.new_caches(2, 16), [(k.zero_(), v.zero_()) for k, v in model.new_caches(2, 16)]
        for i in range(dec.shape[1]):
            a = model.logits(model.decode(dec[:, i: i + 1], cross, cross_mask, plain, start=i))
            b = model.logits(model.decode(dec[:, i: i + 1], cross, cross_mask, fixed, start=torch.tensor(i)))
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


SEARCH_TEXTS = ["we study the dynamics of a driven quantum system . " * 12,
                "neural networks trained with stochastic gradient descent generalize well .",
                "the abstract of a paper is a short summary of its contents . " * 30,
                "graphs of kernels replay in one launch . " * 5]


@pytest.mark.parametrize("eos_bias", [0.0, 5.5], ids=["full-length", "documents-finish-apart"])
@pytest.mark.parametrize("options", [
    GenerationOptions(num_beams=5, max_length=40, min_length=2),
    GenerationOptions(num_beams=3, max_length=24, min_length=4, no_repeat_ngram_size=3, early_stopping=False),
    GenerationOptions(num_beams=1, max_length=30, min_length=0),
], ids=["5-beams", "3-beams-ngram-no-early-stop", "greedy"])
def test_graphed_state_searches_like_the_eager_state(summarizer, monkeypatch, request, options, eos_bias):
    """GraphedDecoderState (what CUDA uses, run here without capture) finds the same summaries as
    DecoderState, also when some documents of the batch finish before the others (a raised EOS
    logit makes the tiny model stop at different steps per document)."""
    from arxsum import decoding

    bias = summarizer.model.final_logits_bias
    original = bias.clone()
    request.addfinalizer(lambda: bias.copy_(original))  # the module's other tests use this model
    bias[0, summarizer.special.eos] += eos_bias
    eager = summarizer.summarize_batch(SEARCH_TEXTS, options)
    kept: list[int] = []
    compacted: list[int] = []
    keep, compact = decoding.GraphedDecoderState.keep_documents, decoding.GraphedDecoderState._compact
    monkeypatch.setattr(decoding, "graphed", lambda device: True)
    monkeypatch.setattr(decoding.GraphedDecoderState, "keep_documents",
                        lambda self, docs, rows: (kept.append(len(docs)), keep(self, docs, rows)))
    monkeypatch.setattr(decoding.GraphedDecoderState, "_compact",
                        lambda self: (compacted.append(len(self.active)), compact(self)))
    fixed = summarizer.summarize_batch(SEARCH_TEXTS, options)
    assert [s.token_ids for s in fixed] == [s.token_ids for s in eager]
    if eos_bias and options.early_stopping:  # finished documents left the batch, which then shrank
        assert kept and compacted and len({len(s.token_ids) for s in eager}) > 1


def test_packed_linear_is_f_linear_and_its_fused_gelu_no_less_accurate():
    """oneDNN-packed bfloat16 weights: the product F.linear's up to the order of the float32 sums (one
    bfloat16 rounding step at most); with the GELU fused (applied to the float32 sums before rounding)
    within bfloat16's rounding of the float64 truth, and no farther from it on average than rounding,
    then GELU, then rounding again."""
    from arxsum.model import Linear

    torch.manual_seed(0)
    linear = Linear(96, 200).to(torch.bfloat16)
    x = torch.randn(3, 70, 96, dtype=torch.bfloat16)
    if not PackedWeight.supported(torch.bfloat16):  # this CPU's oneDNN has no bfloat16: nothing to pack
        assert linear.packed is None
        return
    plain, plain_gelu = linear(x), linear(x, "gelu")
    linear.packed = PackedWeight(linear.weight)
    packed = linear(x)
    torch.testing.assert_close(packed, plain)  # bfloat16's tolerance: a rounding step
    assert (packed.float() - plain.float()).abs().gt(0).float().mean() < 0.05  # and mostly equal
    assert torch.equal(linear(x[:, ::2]), linear(x[:, ::2].contiguous()))  # strided input
    truth = torch.nn.functional.gelu(torch.nn.functional.linear(x.double(), linear.weight.double(),
                                                                linear.bias.double()))
    fused = linear(x, "gelu")
    torch.testing.assert_close(fused.double(), truth, atol=2e-2, rtol=1e-2)
    assert (fused.double() - truth).abs().mean() <= (plain_gelu.double() - truth).abs().mean()
    assert torch.equal(linear(x, "relu"), torch.relu(packed))  # other activations after the product


def test_packed_weights_only_for_bfloat16_and_dropped_on_cast(tiny):
    import copy

    model = load_model(tiny, torch.device("cpu"), torch.float32)
    assert model.use_packed_weights() is False and model.model.encoder.layers[0].fc1.packed is None
    model = model.to(torch.bfloat16)
    if not PackedWeight.supported(torch.bfloat16):
        assert model.use_packed_weights() is False
        return
    ids = random_ids(2, 100, model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 60:] = 0
    with torch.inference_mode():
        plain = model(ids, mask)
        assert model.use_packed_weights() is True
        assert model.model.decoder.layers[0].encoder_attn.k_proj.packed is not None
        packed = model(ids, mask)
        copied = copy.deepcopy(model)  # oneDNN tensors cannot be copied: the copy packs its own
        assert copied.model.encoder.layers[1].fc2.packed.source is copied.model.encoder.layers[1].fc2.weight
        assert torch.equal(copied(ids, mask), packed)
        exact = copy.deepcopy(model).double()(ids, mask)
    # the fused GELU changes bfloat16's rounding, not its size: as close to float64 as before
    plain_error, packed_error = ((t.double() - exact).abs().mean() for t in (plain, packed))
    assert packed_error <= 1.1 * plain_error
    model.float()
    assert all(linear.packed is None for linear in model._many_row_linears())


def test_float32_products_of_bfloat16_values_round_once_and_are_no_less_accurate(tiny):
    """use_float32_products (bfloat16 on CPUs without fast bfloat16 GEMMs): each many-row product is
    the float32 product of the bfloat16 values, activation included, rounded to bfloat16 once; a
    decoding step's few rows keep their path; the whole model's logits are no farther from float64's
    than with torch's bfloat16 operations; a cast turns it off."""
    import copy

    import torch.nn.functional as F

    model = load_model(tiny, CPU, torch.bfloat16)
    assert model.use_float32_products() is True
    fc1 = model.model.encoder.layers[0].fc1
    x = torch.randn(3, 70, fc1.in_features).to(torch.bfloat16)
    want = F.gelu(F.linear(x.float(), fc1.weight.float(), fc1.bias.float())).to(torch.bfloat16)
    assert fc1.widen and torch.equal(fc1(x, "gelu"), want)
    few = x[:1, :4]
    assert torch.equal(fc1(few), F.linear(few, fc1.weight, fc1.bias))  # a step's rows: bfloat16 as before
    ids = random_ids(2, 300, model.config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 200:] = 0
    with torch.inference_mode():
        widened = model(ids, mask)
        exact = copy.deepcopy(model).double()(ids, mask)
        model.use_float32_products(False)
        plain = model(ids, mask)
    widened_error, plain_error = ((t.double() - exact).abs().mean() for t in (widened, plain))
    assert widened_error <= 1.05 * plain_error
    model.use_float32_products()
    model.float()
    assert not any(linear.widen for linear in model._many_row_linears())
    assert not model.model.encoder.layers[0].self_attn.widen
    assert model.use_float32_products() is False  # only for bfloat16


def test_a_summary_longer_than_the_decoders_positions_is_an_options_error(summarizer):
    assert summarizer.decoder_positions == 512
    with pytest.raises(OptionsError, match="--max-length 513 is more than the model's 512 decoder positions"):
        summarizer.summarize("text", max_length=513)
    assert summarizer.summarize("text", max_length=512, num_beams=1, min_length=0)  # the longest allowed runs
