"""CPU kernels (cpukernels.c), compiled on first use and called through ctypes.

A decoding step multiplies a few rows (one document's beams) by large matrices that are read once
per step: the cross-attention keys and values (600 MB at 16k tokens in float32), the decoder's
weights and the LM head. torch's GEMMs reach about 14 GB/s on those shapes on our 2-core machine;
cpukernels.c streams them at about 30 GB/s, what DRAM gives. It also does the encoder's LSG
attention straight from the projections' layout (local_attention). Everything else stays in torch.
On CPUs with AVX512-BF16, bfloat16 matrices are kept in pair tiles (`CpuKernels.pairs`, `tile`).

They run where they were measured: Linux on x86-64 with AVX-512, torch's own OpenMP runtime, a C
compiler (gcc or $CC). Elsewhere, or with ARXSUM_CPU_KERNELS=0, `load()` returns None and the model
uses torch's operators; `unavailable_reason()` says why. The compiled library is cached under
$ARXSUM_CACHE_DIR (default ~/.cache/arxsum), keyed by the source, the compiler and the CPU.

Beside them, reusing_freed_memory(): glibc's malloc told to keep the encoder's large freed
activations for reuse (any CPU run on glibc, kernels or not).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from arxsum.cpuisa import ISAS, Unavailable, cache_dir, choose_isa, cpu_isas, cpuinfo  # noqa: F401 (re-exported)

SOURCE = Path(__file__).with_name("cpukernels.c")
TILE = 64  # as in cpukernels.c
BLOCK = 64  # rows of a tile summed in registers at a time (cpukernels.c), the unit of its pass layout
XCHUNK = 256  # keys per chunk of the cross-attention's values (cpukernels.c), the unit of theirs
MAX_ROWS = 8  # rows the kernels keep in registers; more are done in chunks of 8
HEAD_DIM = 64
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-fPIC", "-shared", "-Wno-psabi"]
ISA_FLAGS = {"avx512": [], "avx2": ["-mno-avx512f"]}  # beside FLAGS' -march=native (cpuisa.ISAS)
DTYPES = {torch.float32: 0, torch.bfloat16: 1}
# the decoder's activation functions (model.ACTIVATIONS) as cpukernels.c's decoder_layer codes them
ACTIVATIONS = {"gelu": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2, "relu": 3, "silu": 4, "swish": 4, "tanh": 5}
LAYER_TENSORS = ("qkv_w", "qkv_b", "o_w", "o_b", "ln1_w", "ln1_b", "cq_w", "cq_b",
                 "co_w", "co_b", "ln2_w", "ln2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b", "ln3_w", "ln3_b")


class _Layer(ctypes.Structure):  # layer_t in cpukernels.c
    _fields_ = [(name, ctypes.c_void_p) for name in LAYER_TENSORS] + [
        ("heads", ctypes.c_int), ("ffn", ctypes.c_int), ("activation", ctypes.c_int), ("eps", ctypes.c_float)]


class LayerWeights:
    """A decoder layer's parameters as decoder_layer reads them: the projections tiled (CpuKernels.tile),
    biases and LayerNorms as they are. Holds the tensors that its C struct points into."""

    def __init__(self, tensors: dict[str, torch.Tensor], heads: int, ffn: int, activation: int, eps: float):
        self.tensors = tensors
        self.dtype = tensors["qkv_b"].dtype
        self.width = heads * HEAD_DIM
        self.struct = _Layer(*(t.data_ptr() for t in tensors.values()), heads, ffn, activation, eps)

_state: dict = {}


def load() -> CpuKernels | None:
    """The kernels, compiled once per machine; None where they cannot run (see unavailable_reason)."""
    if "kernels" not in _state:
        try:
            isa = choose_isa()
            path = _build(isa)
            try:
                kernels = CpuKernels(ctypes.CDLL(str(path)), isa)
            except (OSError, AttributeError) as e:  # a damaged or foreign file where the library should be
                raise Unavailable(f"cannot load {path}: {e}") from None
            kernels.set_amx(True)  # where built in and granted; cpuplan measures whether it is kept
            kernels.self_check()
            _state["kernels"], _state["reason"] = kernels, None
        except Unavailable as e:
            _state["kernels"], _state["reason"] = None, str(e)
    return _state["kernels"]


def unavailable_reason() -> str | None:
    load()
    return _state["reason"]


def _build(isa: str | None = None) -> Path:
    isa = isa or choose_isa()
    cpu = cpuinfo("flags")
    torch_lib = Path(torch.__file__).parent / "lib"
    if not (torch_lib / "libgomp.so.1").is_file():
        raise Unavailable("this torch build does not use GNU OpenMP")
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise Unavailable("no C compiler (gcc or $CC)")
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"{cc} does not run: {e}") from None
    flags = FLAGS + ISA_FLAGS[isa]
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(flags).encode(), cpu.encode(),
                                     str(torch_lib).encode()])).hexdigest()[:16]
    cache = cache_dir() / "kernels"
    target = cache / f"cpukernels-{isa}-{key}.so"
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    except OSError:  # a read-only home: build for this process only
        workdir = Path(tempfile.mkdtemp(prefix="arxsum-kernels-"))
        target = workdir / target.name
    built = workdir / "cpukernels.so"
    command = [cc, *flags, str(SOURCE), "-o", str(built), f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unavailable(f"compiling the kernels failed: {e}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise Unavailable(f"compiling the kernels failed: {last}")
    built.replace(target)  # atomic: processes building at once each rename a whole file
    shutil.rmtree(workdir, ignore_errors=True)
    return target


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt()'s parameters, from glibc's malloc.h
KEEP_FREED = 1 << 30
SETTLED = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}  # where glibc's own adjustment stops


@contextmanager
def reusing_freed_memory():
    """Within: glibc's malloc keeps freed blocks of up to 1 GB for reuse. By default it maps a block of
    32 MB or more afresh and unmaps it when freed, so that each such block comes back as new pages,
    zeroed by the kernel at their first touch: the encoder allocates and frees a few dozen of them
    (16k tokens: 25 MB per activation in bfloat16, 50 MB in float32), and those page faults were ~5%
    of its time in bfloat16 (-0.2 s) and ~7% in float32 (-0.7 s). On leaving, the freed memory goes
    back to the kernel (malloc_trim) and the thresholds to where glibc's own adjustment leaves
    them, so the peak memory does not grow. Process-wide; glibc only (elsewhere nothing changes)."""
    libc = _glibc()
    if libc is None:
        yield
        return
    kept = [libc.mallopt(p, KEEP_FREED) == 1 for p in SETTLED]
    try:
        yield
    finally:
        for p, value in SETTLED.items():
            libc.mallopt(p, value)
        if any(kept):
            libc.malloc_trim(0)


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tile(w: torch.Tensor, passes: int = 1) -> torch.Tensor:
    """(..., O, I) -> (..., ceil(O / 64), I, 64): 64 rows at a time, transposed, zero-padded past O.
    passes > 1 (the AVX2 build's row products read a tile's block of BLOCK rows in `passes` passes of
    64 / passes columns): within each block, pass by pass, [block][pass][row][column] (cpukernels.c,
    TILE_FN); the shape stays (..., ceil(O / 64), I, 64)."""
    o, i = w.shape[-2:]
    full = o // TILE
    if passes > 1:
        if o % TILE == 0 and i % BLOCK == 0:  # one copy: (t, pass, column, block, row) -> (t, block, pass, row, column)
            parts = w.unflatten(-1, (-1, BLOCK)).unflatten(-3, (-1, passes, TILE // passes))
            return parts.permute(*range(parts.dim() - 5), -5, -2, -4, -1, -3).contiguous().view(*w.shape[:-2], -1, i, TILE)
        plain = tile(w)
        blocks = [plain[..., b: b + BLOCK, :] for b in range(0, i, BLOCK)]
        passed = [blk.unflatten(-1, (passes, -1)).transpose(-2, -3).flatten(-3) for blk in blocks]
        return torch.cat(passed, dim=-1).view(plain.shape)
    if full * TILE == o:
        return w.unflatten(-2, (-1, TILE)).transpose(-1, -2).contiguous()
    out = w.new_empty(*w.shape[:-2], full + 1, i, TILE)  # no padded copy of w first (the LM head: 77 MB)
    out[..., :full, :, :] = w[..., : full * TILE, :].unflatten(-2, (full, TILE)).transpose(-1, -2)
    out[..., full, :, : o - full * TILE] = w[..., full * TILE:, :].transpose(-1, -2)
    out[..., full, :, o - full * TILE:] = 0
    return out


def passed_values(v: torch.Tensor, passes: int) -> torch.Tensor:
    """Cross-attention values (..., S, 64) in the AVX2 build's pass layout, same shape: per chunk of
    XCHUNK keys (the last may be shorter), pass by pass, [chunk][pass][key][64 / passes columns]."""
    s, d = v.shape[-2:]
    full, width = s // XCHUNK * XCHUNK, d // passes
    out = torch.empty(v.shape, dtype=v.dtype)
    flat = out.view(*v.shape[:-2], s * d)
    for start, stop, keys in ((0, full, XCHUNK), (full, s, s - full)):
        if stop > start:  # (..., chunks, keys, pass, width) -> (..., chunks, pass, keys, width)
            part = v[..., start:stop, :].unflatten(-2, (-1, keys)).unflatten(-1, (passes, width)).transpose(-2, -3)
            flat[..., start * d: stop * d].view(part.shape).copy_(part)
    return out


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _within(index: torch.Tensor, size: int) -> bool:
    low, high = torch.aminmax(index)
    return int(low) >= 0 and int(high) < size


def _check(ok: bool, what: str, *tensors: torch.Tensor) -> None:
    """The C code trusts its pointers: anything unexpected stops here, not in a segfault."""
    if not ok or any(t.device.type != "cpu" or t.dtype not in DTYPES for t in tensors):
        shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in tensors)
        raise ValueError(f"cpukernels.{what}: unexpected inputs {shapes}")


class CpuKernels:
    head_dim = HEAD_DIM  # the attention kernels'; other models keep torch's

    def __init__(self, lib: ctypes.CDLL, isa: str = "avx512"):
        self.lib = lib
        self.isa = isa  # the instruction set it was compiled for (ISAS)
        lib.rows_linear.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.rows_linear.restype = None
        lib.cross_attention.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 5
        lib.cross_attention.restype = None
        lib.self_attention.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 3 + [ctypes.c_void_p, ctypes.c_int]
        lib.self_attention.restype = None
        lib.local_attention.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 5 + [ctypes.c_float, ctypes.c_int]
        lib.local_attention.restype = None
        lib.decoder_layers.argtypes = [ctypes.POINTER(_Layer), ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                       ctypes.c_int] + [ctypes.c_void_p] * 3 + [ctypes.c_int] + \
            [ctypes.c_void_p] * 3 + [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.decoder_layers.restype = None
        lib.pair_values.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 3
        lib.pair_values.restype = None
        lib.top_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_int,
                                 ctypes.c_void_p, ctypes.c_void_p]
        lib.top_rows.restype = None
        lib.has_dp.restype = ctypes.c_int
        lib.stream_sum.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.stream_sum.restype = ctypes.c_float
        lib.has_amx.restype = ctypes.c_int
        lib.set_amx.argtypes = [ctypes.c_int]
        lib.set_amx.restype = ctypes.c_int
        lib.tile_passes.restype = ctypes.c_int
        self.passes = lib.tile_passes()  # how a tile's blocks are laid out (tile)
        self.pairs = bool(lib.has_dp())  # bf16 keys in pair tiles, for AVX512-BF16
        self.amx = False  # the pair products on AMX tiles (set_amx), same layouts

    def set_amx(self, on: bool) -> bool:
        """Pair products (bf16) on AMX tiles instead of vdpbf16ps, where compiled in and granted by the
        OS; returns whether they now are."""
        self.amx = bool(self.lib.set_amx(int(on)))
        return self.amx

    @property
    def can_amx(self) -> bool:
        return bool(self.lib.has_amx())

    def _in_pairs(self, dtype: torch.dtype) -> bool:
        """Whether matrices of this dtype go in the pair layouts (tile, tile_values)."""
        return self.pairs and dtype == torch.bfloat16

    def tile(self, w: torch.Tensor) -> torch.Tensor:
        """A matrix whose rows are outputs (a weight) or keys, (..., O, I) -> what the kernels read,
        (..., ceil(O / 64), I', 64): tile(w) with I' = I; for bfloat16 where the library uses
        AVX512-BF16, pair tiles: per 64 rows (ceil(I / 2), 64, 2), [p, j, e] = row j's element 2p + e
        (zero past I), I' = I rounded up to even; in the AVX2 build, each block of a tile pass by pass
        (tile(w, passes))."""
        if not self._in_pairs(w.dtype):
            return tile(w, self.passes)
        o, i = w.shape[-2:]
        if i % 2 == 0 and w.stride(-1) == 1 and all(st % 2 == 0 for st in w.stride()[:-1]) \
                and w.storage_offset() % 2 == 0:
            # a pair of bf16 elements is one int32: the pair tiles are the int32 view's plain tiles
            # (torch's copy moves 4-byte elements ~5x faster than 2-byte pairs: cross K at 16k tokens)
            tiled = tile(w.view(torch.int32))
            return tiled.view(torch.bfloat16).view(*tiled.shape[:-2], i, TILE)
        w = F.pad(w, (0, i % 2, 0, -o % TILE))
        pairs = w.unflatten(-2, (-1, TILE)).unflatten(-1, (-1, 2)).transpose(-2, -3).contiguous()
        return pairs.view(*pairs.shape[:-3], -1, TILE)  # (..., tiles, I', 64)

    def tile_values(self, v: torch.Tensor) -> torch.Tensor:
        """Cross-attention values (B, H, S, 64) -> what cross_attention reads: v, or for bfloat16 where
        the library uses AVX512-BF16, pairs of keys (B, H, ceil(S / 2), 64, 2), [s, d, e] = v[2s + e, d];
        in the AVX2 build, (B, H, S, 64) pass by pass within chunks of keys (passed_values)."""
        if not self._in_pairs(v.dtype):
            return passed_values(v, self.passes) if self.passes > 1 else v.contiguous()
        b, h, s, d = v.shape
        _check(d == HEAD_DIM, "tile_values", v)
        rows = v.transpose(1, 2).contiguous()  # (B, S, H, 64): no copy for split_heads' view of a projection
        out = v.new_empty(b, h, -(-s // 2), d, 2)
        self.lib.pair_values(_ptr(rows), _ptr(out), b, s, h)
        return out

    def stream_sum(self, x: torch.Tensor) -> float:
        """The sum of a contiguous float32 tensor, read once by all threads: the benchmark's measure of
        how fast this machine streams memory (its floor for a decoding step)."""
        _check(x.is_contiguous() and x.dtype == torch.float32, "stream_sum", x)
        return float(self.lib.stream_sum(_ptr(x), x.numel()))

    def __deepcopy__(self, memo):  # a loaded library: shared, never copied
        return self

    def linear(self, x: torch.Tensor, w_tiled: torch.Tensor, bias: torch.Tensor | None,
               out_features: int, logits: bool = False) -> torch.Tensor:
        """x (R, I) -> (R, out_features) = x @ W^T + bias, W given by self.tile(W). logits: float32, equal
        to torch's `(x @ W^T) + bias` in x's dtype, then .float() (for bfloat16: rounded after the
        product and again after the bias, as two torch operations round), in one pass."""
        x = x.contiguous()
        rows, width = x.shape
        width_tiled = width + width % 2 if self._in_pairs(x.dtype) else width
        _check(w_tiled.shape == (-(-out_features // TILE), width_tiled, TILE) and w_tiled.is_contiguous()
               and w_tiled.dtype == x.dtype and (bias is None or (bias.dtype == x.dtype and bias.is_contiguous()
                                                                  and bias.shape == (out_features,))),
               "linear", x, w_tiled)
        out = x.new_empty(rows, out_features, dtype=torch.float32 if logits else x.dtype)
        for start in range(0, rows, MAX_ROWS):
            n = min(MAX_ROWS, rows - start)
            self.lib.rows_linear(_ptr(x[start:]), n, width, _ptr(w_tiled), _ptr(bias), out_features,
                                 _ptr(out[start:]), DTYPES[x.dtype], int(logits))
        return out

    def top_rows(self, x: torch.Tensor, add: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """torch.topk(x + add[:, None], k, dim=1) for float32 x (rows, n) with k * 64 <= n (where torch
        partial-sorts): the same values and indices, ties in the same order, in one pass over x."""
        rows, n = x.shape
        _check(x.dtype == torch.float32 and x.is_contiguous() and 0 < k and k * 64 <= n
               and (add is None or (add.dtype == torch.float32 and add.is_contiguous() and add.shape == (rows,))),
               "top_rows", x)
        values, indices = x.new_empty(rows, k), torch.empty(rows, k, dtype=torch.int64)
        self.lib.top_rows(_ptr(x), _ptr(add), rows, n, k, _ptr(values), _ptr(indices))
        return values, indices

    def cross_attention(self, q: torch.Tensor, k_tiled: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None) -> torch.Tensor:
        """q (B, H, R, 64), scaled; keys tile(K) (B, H, ceil(S / 64), 64, 64); values
        tile_values(V) ((B, H, S, 64), or in pairs (B, H, ceil(S / 2), 64, 2), which need the mask);
        mask (B, S) additive or None -> softmax(q K^T + mask) V, (B, H, R, 64)."""
        b, h, rows, d = q.shape
        pairs = v.dim() == 5
        s = mask.shape[-1] if pairs and mask is not None else v.shape[2]
        _check(d == HEAD_DIM and k_tiled.shape == (b, h, -(-s // TILE), d, TILE)
               and v.shape == ((b, h, -(-s // 2), d, 2) if pairs else (b, h, s, d))
               and (not pairs or (self._in_pairs(q.dtype) and mask is not None))
               and k_tiled.is_contiguous() and v.is_contiguous() and k_tiled.dtype == v.dtype == q.dtype
               and (mask is None or (mask.shape == (b, s) and mask.dtype == q.dtype and mask.is_contiguous())),
               "cross_attention", q, k_tiled, v)
        out = q.new_empty(b, h, rows, d)
        for start in range(0, rows, MAX_ROWS):
            chunk = q[:, :, start: start + MAX_ROWS].contiguous()
            dest = out if chunk.shape[2] == rows else q.new_empty(chunk.shape)
            self.lib.cross_attention(_ptr(chunk), _ptr(k_tiled), _ptr(v), _ptr(mask), _ptr(dest), b, h,
                                     chunk.shape[2], s, DTYPES[q.dtype])
            if dest is not out:
                out[:, :, start: start + MAX_ROWS] = dest
        return out

    def self_attention(self, q: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                       ancestry: torch.Tensor) -> torch.Tensor:
        """q (N, H, 64), scaled, one token per row; caches (max_len, N, H, 64), slot [p, j] written at
        position p by row j; ancestry (n, N): row r's history at position p is in slot
        [p, ancestry[p, r]] -> softmax over the n positions, (N, H, 64)."""
        q = q.contiguous()
        rows, h, d = q.shape
        n = ancestry.shape[0]
        _check(d == HEAD_DIM and cache_k.shape == cache_v.shape and cache_k.shape[1:] == (rows, h, d)
               and 0 < n <= cache_k.shape[0] and cache_k.is_contiguous() and cache_v.is_contiguous()
               and cache_k.dtype == cache_v.dtype == q.dtype and ancestry.dtype == torch.int64
               and ancestry.is_contiguous() and ancestry.shape == (n, rows) and _within(ancestry, rows),
               "self_attention", q, cache_k, cache_v)
        out = torch.empty_like(q)
        self.lib.self_attention(_ptr(q), _ptr(cache_k), _ptr(cache_v), _ptr(ancestry), _ptr(out), rows, h, n, None,
                                DTYPES[q.dtype])
        return out

    def local_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                        num_global: int, block_size: int) -> torch.Tensor:
        """The encoder's LSG attention. q, k, v (B, S, H * 64) as projected, S = num_global + a multiple
        of block_size; mask (B, S) float32 additive -> the context (B, S, H * 64), scaled by 1/8: the
        globals against all S tokens, each block's queries against the globals and the neighbouring
        blocks."""
        q, k, v, mask = q.contiguous(), k.contiguous(), v.contiguous(), mask.contiguous()
        b, s, width = q.shape
        nb = (s - num_global) // block_size
        _check(width % HEAD_DIM == 0 and k.shape == v.shape == q.shape and k.dtype == v.dtype == q.dtype
               and mask.shape == (b, s) and mask.dtype == torch.float32 and 0 <= num_global < s
               and block_size > 0 and nb * block_size == s - num_global, "local_attention", q, k, v, mask)
        out = torch.empty_like(q)
        self.lib.local_attention(_ptr(q), _ptr(k), _ptr(v), _ptr(mask), _ptr(out), b, width // HEAD_DIM,
                                 num_global, nb, block_size, HEAD_DIM ** -0.5, DTYPES[q.dtype])
        return out

    def layer_weights(self, layer) -> LayerWeights | None:
        """model.DecoderLayer -> what decoder_layer reads, or None where it cannot run that layer (heads
        not 64 wide, an activation it does not know). Call once the model has its device and dtype."""
        sa, ca = layer.self_attn, layer.encoder_attn
        norms = (layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm)
        linears = (sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj, ca.q_proj, ca.out_proj, layer.fc1, layer.fc2)
        dtype = sa.q_proj.weight.dtype
        if (sa.head_dim != HEAD_DIM or ca.head_dim != HEAD_DIM or sa.num_heads != ca.num_heads
                or layer.activation not in ACTIVATIONS or dtype not in DTYPES
                or any(lin.bias is None for lin in linears) or len({n.eps for n in norms}) != 1
                or any(n.weight is None or n.bias is None for n in norms)):
            return None

        def tiled(linear):  # its tiled copy, made by use_kernels, shared
            return linear.tiled if getattr(linear, "tiled", None) is not None else self.tile(linear.weight)

        qkv = (sa.q_proj, sa.k_proj, sa.v_proj)  # one product: their tiles one after another
        pairs = [(torch.cat([tiled(m) for m in qkv]), torch.cat([m.bias for m in qkv]))]
        pairs += [(tiled(m), m.bias) if isinstance(m, torch.nn.Linear) else (m.weight, m.bias)
                  for m in (sa.out_proj, norms[0], ca.q_proj, ca.out_proj, norms[1], layer.fc1, layer.fc2, norms[2])]
        tensors = dict(zip(LAYER_TENSORS, (t.detach().contiguous() for pair in pairs for t in pair)))
        return LayerWeights(tensors, sa.num_heads, layer.fc1.out_features, ACTIVATIONS[layer.activation],
                            norms[0].eps)

    def decoder_layer(self, weights: LayerWeights, x: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor],
                      mask: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, ancestry: torch.Tensor,
                      pos: int | torch.Tensor) -> torch.Tensor:
        """One decoder layer for one token per row: decoder_layers with a single layer."""
        return self.decoder_layers([weights], x, [cross], mask, [(cache_k, cache_v)], ancestry, pos)

    def decoder_layers(self, weights: list[LayerWeights], x: torch.Tensor,
                       cross: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor,
                       caches: list[tuple[torch.Tensor, torch.Tensor]], ancestry: torch.Tensor,
                       pos: int | torch.Tensor) -> torch.Tensor:
        """A decoding step's decoder layers, one after another, for one token per row: x (N, D) at
        position pos -> (N, D), in one call. pos: an int for every row, or (N,) int64, each row's own
        (rows of documents that joined a running batch are at earlier positions). Per layer l:
        weights[l], cross[l] the documents' keys and values (tile, tile_values), caches[l] = (keys,
        values) (max_len, N, H, 64), this step's keys and values written into their slots at pos;
        shared by the layers: mask (B, S) additive, ancestry as self_attention takes it, with
        ancestry[pos[r], r] filled."""
        if not weights:
            raise ValueError("cpukernels.decoder_layers: no layers")
        n, width = x.shape
        cache_shape = caches[0][0].shape
        if isinstance(pos, int):  # every row's: checked here, without a pass over a tensor
            positions, top, in_range = torch.full((n,), pos, dtype=torch.int64), pos, 0 <= pos < cache_shape[0]
        else:
            positions = pos.contiguous()
            top = int(positions.max()) if positions.numel() else 0
            in_range = positions.shape == (n,) and positions.dtype == torch.int64 and _within(positions, cache_shape[0])
        b, s = mask.shape
        h = width // HEAD_DIM
        pairs = self._in_pairs(x.dtype)
        key_shape = (b, h, -(-s // TILE), HEAD_DIM, TILE)
        value_shape = (b, h, -(-s // 2), HEAD_DIM, 2) if pairs else (b, h, s, HEAD_DIM)
        _check(len(weights) == len(cross) == len(caches) and n % b == 0 and mask.is_contiguous()
               and mask.dtype == x.dtype and cache_shape[1:] == (n, h, HEAD_DIM) and in_range
               and ancestry.dtype == torch.int64 and ancestry.is_contiguous() and ancestry.shape[1:] == (n,)
               and ancestry.shape[0] > top and _within(ancestry[: top + 1], n)
               and all(w.width == width and w.dtype == x.dtype for w in weights)
               and all(k.shape == key_shape and v.shape == value_shape and k.is_contiguous() and v.is_contiguous()
                       and k.dtype == v.dtype == x.dtype for k, v in cross)
               and all(ck.shape == cv.shape == cache_shape and ck.is_contiguous() and cv.is_contiguous()
                       and ck.dtype == cv.dtype == x.dtype for ck, cv in caches),
               "decoder_layers", x, mask, *(t for pair in cross + caches for t in pair))
        count = len(weights)
        pointers = ctypes.c_void_p * count
        layers = (_Layer * count)(*(w.struct for w in weights))
        out = x.contiguous().clone()
        self.lib.decoder_layers(layers, count, _ptr(out), n, b, pointers(*(_ptr(k) for k, _ in cross)),
                                pointers(*(_ptr(v) for _, v in cross)), _ptr(mask), s,
                                pointers(*(_ptr(k) for k, _ in caches)), pointers(*(_ptr(v) for _, v in caches)),
                                _ptr(ancestry), top + 1, _ptr(positions), DTYPES[x.dtype])
        return out

    def self_check(self) -> None:
        """The kernels against torch on small random inputs: a miscompiled library is not used."""
        gen = torch.Generator().manual_seed(0)
        x, w, bias = (torch.randn(shape, generator=gen) for shape in [(5, 96), (70, 96), (70,)])
        q, k, v = (torch.randn(shape, generator=gen) for shape in [(1, 2, 3, 64), (1, 2, 100, 64), (1, 2, 100, 64)])
        mask = torch.zeros(1, 100)
        mask[0, 90:] = torch.finfo(torch.float32).min
        want = torch.softmax(q @ k.transpose(-1, -2) + mask[:, None, None], -1) @ v
        got = self.cross_attention(q, self.tile(k), self.tile_values(v), mask)
        bf16 = [t.bfloat16() for t in (q, k, v, mask)]
        got_bf16 = self.cross_attention(bf16[0], self.tile(bf16[1]), self.tile_values(bf16[2]), bf16[3])
        # self-attention: 3 rows, 7 positions of history, each row's history spread over the slots
        cache_k, cache_v = (torch.randn(9, 3, 2, 64, generator=gen) for _ in range(2))
        ancestry = torch.randint(0, 3, (7, 3), generator=gen)
        rows_q = q[0].transpose(0, 1)  # (3, 2, 64)
        positions = torch.arange(7)[:, None]
        hist_k, hist_v = cache_k[positions, ancestry], cache_v[positions, ancestry]  # (7, 3, 2, 64)
        self_want = torch.einsum("rhp,prhd->rhd", torch.softmax(torch.einsum("rhd,prhd->rhp", rows_q, hist_k), -1),
                                 hist_v)
        self_got = self.self_attention(rows_q, cache_k, cache_v, ancestry)
        # encoder attention: 2 globals and 3 blocks of 4, as a dense mask of who sees whom
        g, bs, s = 2, 4, 14
        lq, lk, lv = (torch.randn(1, s, 64, generator=gen) for _ in range(3))
        block = (torch.arange(s) - g).div(bs, rounding_mode="floor")
        sees = ((block[:, None] - block[None, :]).abs() <= 1) | (block[:, None] < 0) | (block[None, :] < 0)
        dense = torch.softmax((lq @ lk.transpose(-1, -2)) / 8 + torch.where(sees, 0.0, float("-inf")), -1) @ lv
        local_got = self.local_attention(lq, lk, lv, torch.zeros(1, s), g, bs)
        if not (torch.allclose(self.linear(x, self.tile(w), bias, 70), F.linear(x, w, bias), atol=1e-4)
                and torch.allclose(got, want, atol=1e-5) and torch.allclose(got_bf16.float(), want, atol=5e-2)
                and torch.allclose(self_got, self_want, atol=1e-5) and torch.allclose(local_got, dense, atol=1e-5)):
            raise Unavailable("the compiled kernels disagree with torch (self-check)")
