"""The CPU kernels (cpukernels.c) against torch, their fallbacks, and the model with and without them."""

from __future__ import annotations

import copy
import ctypes
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arxsum import cpukernels
from arxsum.decoding import GenerationOptions, SpecialTokens, beam_search
from arxsum.model import LSGBartConfig, LSGBartForConditionalGeneration
from builders import random_state_dict, real_architecture_config

CAN_BUILD = bool(cpukernels.cpu_isas()) and bool(shutil.which("gcc") or shutil.which("cc"))
TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=1e-5), torch.bfloat16: dict(atol=3e-2, rtol=2e-2)}


@pytest.fixture(scope="module")
def kernels():
    k = cpukernels.load()
    if not CAN_BUILD:  # a CPU without AVX-512 or no compiler: the fallback must say why, then nothing to test
        assert k is None and cpukernels.unavailable_reason()
        pytest.skip(f"no CPU kernels on this machine: {cpukernels.unavailable_reason()}")
    assert k is not None, cpukernels.unavailable_reason()
    return k


BUILDS = ["native", "native without AMX", "without AVX512-BF16", "avx2"]


def _separate_copy(path: Path, tmp: Path) -> ctypes.CDLL:
    """The library loaded a second time (its own globals, e.g. whether AMX is on): a copy under tmp."""
    copy = tmp / path.name
    shutil.copyfile(path, copy)
    return ctypes.CDLL(str(copy))


@pytest.fixture(scope="module", params=BUILDS)
def builds(request, kernels, tmp_path_factory):
    """The kernels as built for this CPU (with AMX's pair products where the CPU has them, as chosen
    by default); the same build with vdpbf16ps's; built without AVX512-BF16: the bfloat16 paths that
    widen to float32, which AVX-512 CPUs without BF16 (Skylake-X, Ice Lake) run; and the AVX2 build
    (ARXSUM_CPU_ISA=avx2), the one for CPUs without AVX-512."""
    if request.param == "native":
        return kernels
    tmp = tmp_path_factory.mktemp(request.param.replace(" ", "-"))
    if request.param == "native without AMX":
        if not kernels.can_amx:
            pytest.skip("this build has no AMX products")
        plain = cpukernels.CpuKernels(_separate_copy(Path(kernels.lib._name), tmp), kernels.isa)
        assert not plain.set_amx(False)
        plain.self_check()
        return plain
    if request.param == "avx2":
        if "avx2" not in cpukernels.cpu_isas():
            pytest.skip("this CPU has no AVX2 with FMA")
        with pytest.MonkeyPatch.context() as m:
            m.setenv("ARXSUM_CACHE_DIR", str(tmp))
            path = cpukernels._build("avx2")
        plain = cpukernels.CpuKernels(ctypes.CDLL(str(path)), "avx2")
        plain.self_check()
        assert not plain.pairs and not plain.can_amx
        return plain
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cpukernels, "FLAGS", cpukernels.FLAGS + ["-mno-avx512bf16"])
        m.setenv("ARXSUM_CACHE_DIR", str(tmp))
        path = cpukernels._build("avx512")
    plain = cpukernels.CpuKernels(ctypes.CDLL(str(path)))
    plain.self_check()
    assert not plain.pairs
    return plain


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """load() as on a new machine: nothing loaded in this process, an empty cache directory."""
    monkeypatch.setattr(cpukernels, "_state", {})
    monkeypatch.setenv("ARXSUM_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("width", [64, 161])
def test_pair_tiles_hold_each_rows_pairs(kernels, width):
    """tile() in pairs: [tile, p, j, e] = row 64 * tile + j's element 2p + e, zero past the rows and
    the width; the same from a strided view (the keys as split_heads leaves them) as from a copy."""
    if not kernels.pairs:
        pytest.skip("this CPU has no AVX512-BF16: no pair tiles")
    x = torch.randn(2, 100, 3 * width).bfloat16()
    view = x.view(2, 100, 3, width).transpose(1, 2)  # (2, 3, 100, width), rows 3 * width apart
    got = kernels.tile(view)
    assert torch.equal(got, kernels.tile(view.contiguous()))
    padded = torch.zeros(2, 3, 128, width + width % 2, dtype=torch.bfloat16)
    padded[:, :, :100, :width] = view
    want = padded.view(2, 3, 2, 64, -1, 2).transpose(3, 4).reshape(2, 3, 2, -1, 64)
    assert got.shape == want.shape and torch.equal(got, want)


@pytest.mark.parametrize("shape", [(128, 192), (100, 161), (64, 64), (3, 70)])
@pytest.mark.parametrize("passes", [1, 2, 4])
def test_tiles_lie_pass_by_pass_within_each_block(shape, passes):
    """tile(w, passes): element (o, i) of w at [o // 64][block b = i // 64][pass p = (o % 64) // (64 //
    passes)][i % 64][o % (64 // passes)] of the flat tile, a block holding min(64, I - 64 b) rows;
    zero past O; the one-copy way (O and I multiples of 64) and the general one agree."""
    o, i = shape
    w = torch.randn(o, i)
    got = cpukernels.tile(w, passes)
    tiles = -(-o // 64)
    assert got.shape == (tiles, i, 64)
    flat, width = got.reshape(tiles, -1), 64 // passes
    want = torch.zeros_like(flat)
    for b in range(0, i, 64):
        rows = min(64, i - b)
        for p in range(passes):
            for t in range(tiles):
                cols = w[t * 64 + p * width: t * 64 + (p + 1) * width, b: b + rows]  # (<= width, rows)
                block = torch.zeros(rows, width)
                block[:, : cols.shape[0]] = cols.T
                start = b * 64 + p * rows * width
                want[t, start: start + rows * width] = block.flatten()
    assert torch.equal(flat, want)
    assert torch.equal(cpukernels.tile(w.T.contiguous().T, passes), got)  # a strided weight


@pytest.mark.parametrize("keys", [256, 600, 100, 16448])
def test_values_lie_pass_by_pass_within_each_chunk_of_keys(keys):
    """passed_values(v, 4): key s, column c at [chunk s // 256][pass c // 16][s % 256][c % 16] of the
    flat values, a chunk holding min(256, S - 256 chunk) keys."""
    v = torch.randn(2, 3, keys, 64)
    got = cpukernels.passed_values(v, 4)
    assert got.shape == v.shape and got.is_contiguous()
    flat = got.view(2, 3, -1)
    for start in range(0, keys, 256):
        n = min(256, keys - start)
        for p in range(4):
            at = start * 64 + p * n * 16
            assert torch.equal(flat[:, :, at: at + n * 16], v[:, :, start: start + n, p * 16: (p + 1) * 16].flatten(-2))
    assert torch.equal(cpukernels.passed_values(v, 1), v)


def test_freed_memory_is_reused_inside_and_given_back_after():
    """reusing_freed_memory(): inside, a 64 MB block comes from malloc's heap and stays resident when
    freed, to be handed out again; after, what was freed inside is no longer resident, nor is a new
    block that size before it is touched. (Whether that block is mapped afresh or handed out of a
    trimmed free chunk inside the heap depends on what the process allocated meanwhile: in the full
    suite it once came from the heap, so the test does not ask.)"""
    if cpukernels._glibc() is None:
        pytest.skip("glibc only")

    def mapping(t: torch.Tensor) -> str:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                low, high = (int(a, 16) for a in fields[0].split("-"))
                if low <= t.data_ptr() < high:
                    return fields[5] if len(fields) > 5 else ""
        return "?"

    def resident_mb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

    size = 64 << 20
    before = resident_mb()
    with cpukernels.reusing_freed_memory():
        block = torch.ones(size, dtype=torch.uint8)
        where = mapping(block)
        del block
        kept = resident_mb() - before  # freed, still malloc's
    after = torch.empty(size, dtype=torch.uint8)
    assert where == "[heap]" and kept >= 40 and after.numel() == size  # 59-64 MB measured: RSS moves a little
    assert resident_mb() < before + 30


@pytest.mark.parametrize("keys", [1, 2, 77, 256])
def test_value_pairs_hold_each_pair_of_keys(kernels, keys):
    """tile_values() in pairs: [b, h, s, d, e] = V[b, h, 2s + e, d], zero past the keys; the same from
    split_heads' view of a projection (the cross-attention's case) as from a contiguous tensor."""
    if not kernels.pairs:
        pytest.skip("this CPU has no AVX512-BF16: no value pairs")
    projected = torch.randn(2, keys, 3 * 64).bfloat16()
    view = projected.view(2, keys, 3, 64).transpose(1, 2)  # (2, 3, keys, 64)
    got = kernels.tile_values(view)
    padded = torch.zeros(2, 3, keys + keys % 2, 64, dtype=torch.bfloat16)
    padded[:, :, :keys] = view
    want = padded.view(2, 3, -1, 2, 64).transpose(-1, -2)
    assert got.shape == want.shape and torch.equal(got, want)
    assert torch.equal(kernels.tile_values(view.contiguous()), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,width,out,bias", [(1, 64, 64, True), (5, 768, 3072, True), (8, 96, 70, False),
                                                 (13, 96, 129, True), (5, 3072, 768, True), (5, 768, 1001, False),
                                                 (3, 161, 65, True)])
def test_linear_equals_torch(builds, dtype, rows, width, out, bias):
    """Against the float64 product of the same inputs: bfloat16 within its rounding, float32 at
    most twice torch's own float32 error (the order of the sums differs, not the precision)."""
    gen = torch.Generator().manual_seed(rows * out)
    x, w = torch.randn(rows, width, generator=gen).to(dtype), torch.randn(out, width, generator=gen).to(dtype)
    b = torch.randn(out, generator=gen).to(dtype) if bias else None
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    got = builds.linear(x, builds.tile(w), b, out)
    assert got.dtype == dtype and got.shape == (rows, out)
    if dtype == torch.bfloat16:
        torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])
    else:
        torch_error = (F.linear(x, w, b).double() - want).abs().max().item()
        assert (got.double() - want).abs().max().item() <= 2 * torch_error + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,out", [(5, 1000), (8, 70), (3, 50265)])
def test_logits_equal_the_product_then_the_bias_then_float32(builds, dtype, rows, out):
    """The LM head's pass (linear(..., logits=True)): bit for bit what the model's torch operations give
    after the same product, `(x @ W^T) + bias` in the model's dtype, then .float(): for bfloat16 two
    roundings, not the one of a bias added inside the product."""
    gen = torch.Generator().manual_seed(rows + out)
    x, w = torch.randn(rows, 96, generator=gen).to(dtype), torch.randn(out, 96, generator=gen).to(dtype)
    b = (torch.randn(out, generator=gen) * 3).to(dtype)
    tiled = builds.tile(w)
    got = builds.linear(x, tiled, b, out, logits=True)
    assert got.dtype == torch.float32 and got.shape == (rows, out)
    assert torch.equal(got, (builds.linear(x, tiled, None, out) + b).float())
    if dtype == torch.bfloat16:  # and not what one rounding gives
        assert not torch.equal(got, builds.linear(x, tiled, b, out).float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,rows,keys,padded", [(1, 5, 16448, False), (2, 1, 100, True), (3, 8, 64, False),
                                                    (2, 11, 1000, True), (1, 5, 1001, True)])
def test_cross_attention_equals_torch(builds, dtype, batch, rows, keys, padded):
    gen = torch.Generator().manual_seed(keys + rows)
    q = torch.randn(batch, 4, rows, 64, generator=gen) * 0.125
    k, v = torch.randn(batch, 4, keys, 64, generator=gen), torch.randn(batch, 4, keys, 64, generator=gen)
    mask = torch.zeros(batch, keys)
    if padded:  # the last document's last keys are padding
        mask[-1, keys // 2:] = torch.finfo(torch.float32).min
    q, k, v, mask = (t.to(dtype) for t in (q, k, v, mask))
    scores = q.double() @ k.double().transpose(-1, -2) + mask.double()[:, None, None, :]
    want = torch.softmax(scores, dim=-1) @ v.double()
    values = builds.tile_values(v)  # bf16 values in pairs: the mask says how many keys there are
    got = builds.cross_attention(q, builds.tile(k), values, mask if padded or values.dim() == 5 else None)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,heads,positions", [(5, 12, 300), (1, 1, 1), (3, 7, 20), (10, 13, 9)])
def test_self_attention_follows_each_rows_history(builds, dtype, rows, heads, positions):
    """Heads are taken in groups of 6 per task: 7 and 13 heads leave a group of one."""
    gen = torch.Generator().manual_seed(rows * heads + positions)
    q = (torch.randn(rows, heads, 64, generator=gen) * 0.125).to(dtype)
    cache_k, cache_v = (torch.randn(positions + 2, rows, heads, 64, generator=gen).to(dtype) for _ in range(2))
    ancestry = torch.randint(0, rows, (positions, rows), generator=gen)
    at = torch.arange(positions)[:, None]
    hist_k, hist_v = cache_k[at, ancestry].double(), cache_v[at, ancestry].double()  # (n, rows, H, 64)
    scores = torch.einsum("rhd,prhd->rhp", q.double(), hist_k)
    want = torch.einsum("rhp,prhd->rhd", torch.softmax(scores, -1), hist_v)
    got = builds.self_attention(q, cache_k, cache_v, ancestry)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,heads,globals_,blocks,block", [(1, 12, 64, 8, 256), (2, 3, 3, 5, 4), (1, 2, 0, 3, 8),
                                                                (2, 1, 5, 4, 20), (1, 1, 1, 1, 7)])
def test_local_attention_equals_the_windows_of_the_reference(builds, dtype, batch, heads, globals_, blocks, block):
    """The encoder's attention against the torch path (model.LSGSelfAttention) in float64: globals
    against everything, blocks against the globals and their neighbours, padding masked, odd sizes
    padded inside the kernel."""
    from arxsum.model import LSGSelfAttention

    gen = torch.Generator().manual_seed(blocks * block + heads)
    s = globals_ + blocks * block
    q, k, v = (torch.randn(batch, s, heads * 64, generator=gen).to(dtype) for _ in range(3))
    mask = torch.zeros(batch, s)
    mask[-1, s - block - 2:] = torch.finfo(torch.float32).min  # the last document ends in padding
    attention = LSGSelfAttention(heads * 64, heads, block, globals_)
    qh, kh, vh = (attention.split_heads(t.double()) for t in (q, k, v))
    key_mask = mask.double()[:, None, None, :]
    want_local = attention.local_attention(qh[:, :, globals_:], kh, vh, key_mask)
    want_global = F.scaled_dot_product_attention(qh[:, :, :globals_], kh, vh, attn_mask=key_mask)
    want = attention.merge_heads(torch.cat([want_global, want_local], dim=2))
    got = builds.local_attention(q, k, v, mask, globals_, block)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])


def layer_inputs(layer, batch: int, rows: int, keys: int, pos: int, gen: torch.Generator):
    """x, the documents' keys and values, a padded mask, caches with random histories and an ancestry."""
    h, d = layer.self_attn.num_heads, 64
    n = batch * rows
    x = torch.randn(n, h * d, generator=gen)
    k, v = (torch.randn(batch, h, keys, d, generator=gen) for _ in range(2))
    mask = torch.zeros(batch, keys)
    mask[-1, keys // 2:] = torch.finfo(torch.float32).min
    cache_k, cache_v = (torch.randn(pos + 3, n, h, d, generator=gen) for _ in range(2))
    ancestry = torch.cat([torch.randint(0, n, (pos, n), generator=gen), torch.arange(n)[None]])
    return x, k, v, mask, cache_k, cache_v, ancestry


def torch_layer_step(layer, x, k, v, mask, cache_k, cache_v, ancestry, pos, dtype):
    """The layer's own torch code in `dtype` on each row's history gathered into a plain cache ->
    (output, this step's keys and values)."""
    layer = copy.deepcopy(layer).to(dtype)
    layer.kernels = None
    at = torch.arange(pos + 1)[:, None]
    plain = [c[at, ancestry].to(dtype).clone() for c in (cache_k, cache_v)]
    cross = (k.transpose(-1, -2).contiguous().to(dtype), v.to(dtype))
    out = layer(x[:, None].to(dtype), cross, mask[:, None, None].to(dtype), tuple(plain), pos)[:, 0]
    return out, plain[0][pos], plain[1][pos]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation,batch,rows,ffn,pos", [("gelu", 1, 5, 3072, 40), ("gelu_new", 2, 5, 100, 0),
                                                           ("relu", 2, 10, 64, 7), ("silu", 1, 1, 80, 3),
                                                           ("tanh", 3, 2, 48, 1)])
def test_decoder_layer_equals_the_layers_torch_code(builds, dtype, activation, batch, rows, ffn, pos):
    """One kernels call per layer and step: the projections, self-attention over each row's history,
    cross-attention (10 beams: in chunks of 8), feed-forward and norms, and this step's keys and
    values written into the caches' slots; as close to float64 as the layer's torch code is."""
    from arxsum.model import DecoderLayer

    config = LSGBartConfig.from_dict(real_architecture_config(vocab_size=100, d_model=128, decoder_attention_heads=2, encoder_attention_heads=2,
                                                              decoder_ffn_dim=ffn, activation_function=activation))
    gen = torch.Generator().manual_seed(ffn + pos)
    layer = DecoderLayer(config).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if "weight" in name and p.dim() == 2 else 0.5)
                    + (1.0 if "norm.weight" in name else 0.0))
    x, k, v, mask, cache_k, cache_v, ancestry = layer_inputs(layer, batch, rows, 300, pos, gen)
    with torch.inference_mode():
        exact, exact_k, exact_v = torch_layer_step(layer, x, k, v, mask, cache_k, cache_v, ancestry, pos, torch.float64)
        plain, _, _ = torch_layer_step(layer, x, k, v, mask, cache_k, cache_v, ancestry, pos, dtype)
        weights = builds.layer_weights(copy.deepcopy(layer).to(dtype))  # its projections tiled by itself
        ck, cv = cache_k.to(dtype), cache_v.to(dtype)
        got = builds.decoder_layer(weights, x.to(dtype), (builds.tile(k.to(dtype)), builds.tile_values(v.to(dtype))),
                                   mask.to(dtype), ck, cv, ancestry, pos)
    assert got.dtype == dtype and got.shape == x.shape
    error = (got.double() - exact).abs().max().item()
    assert error <= max(2 * (plain.double() - exact).abs().max().item(), 1e-5), error
    for written, want in ((ck[pos], exact_k), (cv[pos], exact_v)):
        torch.testing.assert_close(written.double(), want, **TOLERANCE[dtype])
    untouched = torch.arange(ck.shape[0]) != pos
    assert torch.equal(ck[untouched], cache_k.to(dtype)[untouched])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_steps_layers_in_one_call_equal_one_call_per_layer(builds, dtype):
    """decoder_layers (what a decoding step calls: every layer at once) gives, bit for bit, what the
    layers give one call at a time, and writes each layer's keys and values into that layer's caches
    at each row's own position."""
    from arxsum.model import DecoderLayer

    config = LSGBartConfig.from_dict(real_architecture_config(vocab_size=100, d_model=128, decoder_attention_heads=2,
                                                              encoder_attention_heads=2, decoder_ffn_dim=96))
    gen = torch.Generator().manual_seed(3)
    layers = [DecoderLayer(config).eval().to(dtype) for _ in range(3)]
    inputs = [layer_inputs(layer, 2, 3, 70, 6, gen) for layer in layers]
    x, mask, ancestry = inputs[0][0].to(dtype), inputs[0][3].to(dtype), inputs[0][6]
    pos = torch.tensor([6, 6, 6, 2, 2, 2])  # the second document joined later
    weights = [builds.layer_weights(layer) for layer in layers]
    cross = [(builds.tile(i[1].to(dtype)), builds.tile_values(i[2].to(dtype))) for i in inputs]
    caches = [(i[4].to(dtype).clone(), i[5].to(dtype).clone()) for i in inputs]
    apart = [(k.clone(), v.clone()) for k, v in caches]
    with torch.inference_mode():
        got = builds.decoder_layers(weights, x, cross, mask, caches, ancestry, pos)
        want = x
        for w, c, (k, v) in zip(weights, cross, apart):
            want = builds.decoder_layer(w, want, c, mask, k, v, ancestry, pos)
    assert torch.equal(got, want)
    for (k, v), (wk, wv), i in zip(caches, apart, inputs):
        assert torch.equal(k, wk) and torch.equal(v, wv)
        assert not torch.equal(k, i[4].to(dtype))  # this step's keys were written


@pytest.mark.parametrize("kind", ["random", "bf16 ties", "few values", "-inf", "nan", "one finite"])
def test_top_rows_is_torch_topk_to_the_order_of_ties(builds, kind):
    """The beam search's candidates: torch.topk(x + add[:, None], k) itself, indices included, also
    where many values are equal (bfloat16 logits tie often), with -inf (banned tokens) and NaN."""
    gen = torch.Generator().manual_seed(len(kind))
    for trial in range(40):
        rows, n, k = 1 + trial % 7, 640 + 997 * trial, 1 + trial % 10
        x = torch.randn(rows, n, generator=gen) * 3
        if kind == "bf16 ties":
            x = x.bfloat16().float()
        elif kind == "few values":
            x = torch.randint(0, 20, (rows, n), generator=gen).float()
        elif kind == "-inf":
            x[:, torch.randint(0, n, (n // 3,), generator=gen)] = float("-inf")
        elif kind == "nan":
            x[torch.rand(rows, n, generator=gen) < 0.001] = float("nan")
        elif kind == "one finite":
            x = torch.full((rows, n), float("-inf"))
            x[:, trial % n] = 0.0
        add = (torch.randn(rows, generator=gen) * 5).bfloat16().float() if trial % 2 else None
        want = torch.topk(x if add is None else x + add[:, None], k, dim=1)
        values, indices = builds.top_rows(x, add, k)
        assert torch.equal(indices, want.indices), (trial, indices[0], want.indices[0])
        assert torch.equal(values.nan_to_num(7.0), want.values.nan_to_num(7.0))


def test_unexpected_inputs_are_refused_not_crashed(kernels):
    x, w = torch.randn(5, 64), torch.randn(70, 64)
    with pytest.raises(ValueError, match="linear"):
        kernels.linear(x, w, None, 70)  # not in the tiled layout
    with pytest.raises(ValueError, match="linear"):
        kernels.linear(x.double(), cpukernels.tile(w).double(), None, 70)
    q, k = torch.randn(1, 2, 5, 32), torch.randn(1, 2, 100, 32)
    with pytest.raises(ValueError, match="cross_attention"):
        kernels.cross_attention(q, cpukernels.tile(k), k, None)  # 32-wide heads
    from arxsum.model import DecoderLayer

    layer = DecoderLayer(LSGBartConfig.from_dict(real_architecture_config(
        vocab_size=100, d_model=128, decoder_attention_heads=2, encoder_attention_heads=2, decoder_ffn_dim=64)))
    weights = kernels.layer_weights(layer)
    x, k, v, mask, cache_k, cache_v, ancestry = layer_inputs(layer, 1, 5, 100, 4, torch.Generator().manual_seed(0))
    cross = (kernels.tile(k), kernels.tile_values(v))
    with pytest.raises(ValueError, match="decoder_layer"):  # the step past the caches' end
        kernels.decoder_layer(weights, x, cross, mask, cache_k, cache_v, ancestry, cache_k.shape[0])
    ancestry[2, 1] = 5  # a row that does not exist
    with pytest.raises(ValueError, match="decoder_layer"):
        kernels.decoder_layer(weights, x, cross, mask, cache_k, cache_v, ancestry, 4)
    layer.activation = "mish"  # nothing decoder_layer knows: the layer keeps torch's code
    assert kernels.layer_weights(layer) is None


def test_switched_off_by_environment(fresh, monkeypatch):
    monkeypatch.setenv("ARXSUM_CPU_KERNELS", "0")
    assert cpukernels.load() is None
    assert "ARXSUM_CPU_KERNELS=0" in cpukernels.unavailable_reason()


def test_a_failing_compiler_means_torch_ops_not_an_error(fresh, monkeypatch):
    monkeypatch.setenv("CC", "false")  # runs, exits 1
    assert cpukernels.load() is None
    reason = cpukernels.unavailable_reason()
    assert "compil" in reason or "no AVX-512" in reason or "x86-64" in reason
    assert not list(fresh.rglob("*.so"))


def test_a_damaged_library_in_the_cache_means_torch_ops(fresh, monkeypatch):
    damaged = fresh / "cpukernels-0123456789abcdef.so"
    damaged.write_bytes(b"not an ELF file")
    monkeypatch.setattr(cpukernels, "_build", lambda isa=None: damaged)
    assert cpukernels.load() is None
    assert cpukernels.unavailable_reason().startswith(f"cannot load {damaged}")


def test_built_once_then_loaded_from_the_cache(fresh, kernels):
    assert cpukernels.load() is not None
    built = list((fresh / "kernels").glob("cpukernels-*.so"))
    assert len(built) == 1 and not list((fresh / "kernels").glob(".build-*"))  # no leftovers
    stamp = built[0].stat().st_mtime_ns
    cpukernels._state.clear()
    assert cpukernels.load() is not None and built[0].stat().st_mtime_ns == stamp


@pytest.fixture(scope="module")
def real_shaped():
    """The real model's widths (768, 12 heads of 64, FFN 3072), fewer layers and a small vocabulary."""
    config = real_architecture_config(vocab_size=1200, encoder_layers=1, decoder_layers=2,
                                      max_position_embeddings=2048, init_std=0.1)
    model = LSGBartForConditionalGeneration(LSGBartConfig.from_dict(config))
    model.load_state_dict(random_state_dict(config, seed=3))
    return model.eval()


def test_model_with_kernels_equals_model_without(kernels, real_shaped):
    model = real_shaped
    c = model.config
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, c.vocab_size, (2, 1500), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 1200:] = 0
    dec = torch.randint(5, c.vocab_size, (2, 6), generator=gen)
    special = SpecialTokens(c.decoder_start_token_id, c.eos_token_id, c.pad_token_id)
    options = GenerationOptions(num_beams=5, max_length=24, min_length=24)
    with torch.inference_mode():
        exact = copy.deepcopy(model).double()(ids, mask, dec)
        plain_logits = model(ids, mask, dec)
        plain_tokens = beam_search(model, ids, mask, options, special)
        model.use_kernels(kernels)
        try:
            assert model.model.decoder.layers[0].kernels is kernels  # 64-wide heads: cross-attention too
            assert model.model.encoder.layers[0].self_attn.kernels is kernels  # 1500 tokens: 6 blocks
            fast_logits = model(ids, mask, dec)
            fast_tokens = beam_search(model, ids, mask, options, special)
        finally:
            model.use_kernels(None)
    # as close to the float64 model as torch's float32 ops are (other sum orders, same precision)
    plain_error = (plain_logits.double() - exact).abs().max().item()
    assert (fast_logits.double() - exact).abs().max().item() <= 2 * plain_error
    assert fast_tokens == plain_tokens


@pytest.mark.parametrize("eos_bias", [6.0, 7.0])
def test_documents_finishing_apart_keep_their_histories(kernels, real_shaped, monkeypatch, eos_bias):
    """With the kernels, reordering beams only rewrites the ancestry table; when a document finishes,
    the others' histories are gathered into place. Same summaries as the copying path."""
    from arxsum import decoding

    model = copy.deepcopy(real_shaped)
    c = model.config
    model.final_logits_bias[0, c.eos_token_id] += eos_bias  # a raised EOS: documents stop at different steps
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, c.vocab_size, (3, 700), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 500:], mask[2, 300:] = 0, 0
    special = SpecialTokens(c.decoder_start_token_id, c.eos_token_id, c.pad_token_id)
    options = GenerationOptions(num_beams=5, max_length=30, min_length=2)
    kept = []
    keep = decoding.DecoderState.keep_documents
    monkeypatch.setattr(decoding.DecoderState, "keep_documents",
                        lambda self, docs, rows: (kept.append(self.ancestry is not None), keep(self, docs, rows)))
    with torch.inference_mode():
        plain = beam_search(model, ids, mask, options, special)
        model.use_kernels(kernels)
        fast = beam_search(model, ids, mask, options, special)
    assert fast == plain
    assert len({len(t) for t in plain}) > 1 and False in kept and True in kept  # both paths dropped documents


def test_moving_or_casting_the_model_drops_the_kernels(kernels, real_shaped):
    model = copy.deepcopy(real_shaped)
    model.use_kernels(kernels)
    assert model.model.decoder.layers[1].fc1.kernels is kernels
    model.to(torch.bfloat16)
    assert model.kernels is None and model.model.decoder.layers[1].fc1.kernels is None
    assert model.model.decoder.layers[1].fc1.tiled is None and model._lm_head_tiled is None
    assert model.model.decoder.layers[1].kernels is None
    assert model.model.encoder.layers[0].self_attn.kernels is None


@pytest.mark.parametrize("value,reason", [("none", "turned off by ARXSUM_CPU_ISA=none"),
                                          ("sse9", "ARXSUM_CPU_ISA=sse9 is not one of auto, avx512, avx2, none")])
def test_the_isa_can_be_turned_off_and_a_wrong_one_is_named(fresh, monkeypatch, value, reason):
    monkeypatch.setenv("ARXSUM_CPU_ISA", value)
    assert cpukernels.load() is None
    assert cpukernels.unavailable_reason() == reason


@pytest.mark.parametrize("isa", cpukernels.ISAS)
def test_a_forced_isa_is_the_one_built_or_refused_with_its_reason(fresh, monkeypatch, isa):
    monkeypatch.setenv("ARXSUM_CPU_ISA", isa)
    k = cpukernels.load()
    if isa in cpukernels.cpu_isas() and CAN_BUILD:
        assert k is not None and k.isa == isa
        assert [p.name.split("-")[1] for p in (fresh / "kernels").glob("cpukernels-*.so")] == [isa]
    else:
        assert k is None and cpukernels.unavailable_reason() == f"ARXSUM_CPU_ISA={isa}, but this CPU does not run {isa}"
