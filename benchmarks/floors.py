"""This machine's own limits, measured in the bench's run: what a paper could cost at best here.

    stream    GB/s reading memory with the threads arxsum uses (cpukernels.stream_sum over 1 GiB)
    gemm      GFLOP/s of torch's best product at the encoder's shape (16448 x 768 @ 768 x 3072), per
              dtype: F.linear, whole or in the encoder's row chunks, and for bfloat16 also oneDNN's
              packed weights (AMX where present), whole or in those chunks, and float32 products of
              the bfloat16 values (a CPU without native bfloat16 computes a bfloat16 model's products
              fastest that way); with freed memory reused, as arxsum's encoder runs
    start     seconds for `python -c "import torch"` (a fresh process's fixed cost)

The floors (README "Speed and memory"): encoder + cross K/V = the encoder's FLOPs at the GEMM rate;
a decoding step = the bytes it must read (decoder weights, LM head, cross-attention keys and
values) at the stream rate; end to end = start + encoder + (steps - 1) steps.
"""

from __future__ import annotations

import subprocess
import sys
import time

ENCODER_SHAPE = (16448, 768, 3072)  # rows (16384 tokens + 64 globals), in, out: the encoder's FFN
STREAM_BYTES = 1 << 30


def measure(threads: int | None = None, quick: bool = False) -> dict:
    """quick: small sizes (128 MiB, 2048 rows), for the bench's --tiny smoke runs and its tests."""
    import torch
    import torch.nn.functional as F

    from arxsum import cpukernels
    from arxsum.model import ENCODER_CHUNK, PackedWeight

    if threads:
        torch.set_num_threads(threads)
    out = {"threads": torch.get_num_threads(), "gemm_gflops": {}}
    out["stream_gbs"] = stream_gbs(quick)
    if out["stream_gbs"] is None:
        out["stream_unavailable"] = cpukernels.unavailable_reason()
    rows, width, outs = ENCODER_SHAPE
    rows = 2048 if quick else rows
    flop = 2 * rows * width * outs
    for dtype in (torch.float32, torch.bfloat16):
        a, w = torch.randn(rows, width).to(dtype), torch.randn(outs, width).to(dtype)
        candidates = []
        if dtype == torch.bfloat16:  # widened chunk by chunk and rounded back, conversions counted
            candidates.append(lambda a=a, w=w: [F.linear(c.float(), w.float()).bfloat16() for c in a.split(ENCODER_CHUNK)])
        if PackedWeight.supported(dtype):
            packed = PackedWeight(w)
            candidates.append(lambda a=a, p=packed: torch.ops.mkldnn._linear_pointwise(a, p.tensor, None, "none", [], ""))
            # and in the encoder's row chunks, as arxsum runs them
            candidates.append(lambda a=a, p=packed: [torch.ops.mkldnn._linear_pointwise(c, p.tensor, None, "none", [], "")
                                                     for c in a.split(ENCODER_CHUNK)])
        # whole, and in the row chunks arxsum's encoder uses (model.ENCODER_CHUNK: often faster)
        candidates += [lambda a=a, w=w: F.linear(a, w), lambda a=a, w=w: [F.linear(c, w) for c in a.split(ENCODER_CHUNK)]]
        best = None
        # as arxsum's encoder runs (decoding._encoding): freed memory reused, not mapped afresh at each call
        with cpukernels.reusing_freed_memory():
            for fn in candidates:  # a clear loser is timed once (bfloat16 without native support: ~5 s a call)
                seconds = _best_s(fn, 4, best)
                best = seconds if best is None else min(best, seconds)
        out["gemm_gflops"][str(dtype).removeprefix("torch.")] = flop / best / 1e9
    out["start_s"] = min(_start_s() for _ in range(1 if quick else 3))
    return out


def stream_gbs(quick: bool = False) -> float | None:
    """GB/s reading STREAM_BYTES (1/8 of it with quick) with the threads torch uses now: the best of 5
    passes of cpukernels.stream_sum; None without the kernels. The bench also measures it just before
    and just after each arxsum row (its process, no worker running), since a VM's memory can drift by
    tens of percent within minutes."""
    import torch

    from arxsum import cpukernels

    kernels = cpukernels.load()
    if kernels is None:
        return None
    size = STREAM_BYTES // 8 if quick else STREAM_BYTES
    x = torch.ones(size // 4)
    return size / _best_s(lambda: kernels.stream_sum(x), 5) / 1e9


def _best_s(fn, runs: int, beaten_s: float | None = None) -> float:
    """The fastest of `runs` calls after a warm-up (cpuplan.best_ms); a warm-up slower than BEATEN x
    beaten_s is the answer."""
    from arxsum.cpuplan import best_ms

    return best_ms(fn, runs, None if beaten_s is None else beaten_s * 1e3) / 1e3


def _start_s() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def encoder_flop(config: dict, tokens: int) -> float:
    """FLOPs of the encoder and the cross-attention keys/values for one paper of `tokens` tokens."""
    d, ffn = config["d_model"], config["encoder_ffn_dim"]
    g, block = config.get("num_global_tokens", 0), config.get("block_size", tokens)
    rows = tokens + g
    keys = min(3 * block + g, rows)  # a query's window: 3 blocks and the globals
    per_layer = 4 * d * d + 2 * d * ffn + 2 * keys * d  # projections, FFN, QK^T and PV
    macs = rows * (config["encoder_layers"] * per_layer + config["decoder_layers"] * 2 * d * d)
    return 2.0 * macs


def step_bytes(config: dict, tokens: int, dtype: str) -> float:
    """Bytes a decoding step must read: the decoder's weights, the LM head, the cross keys and values."""
    d, ffn, layers = config["d_model"], config["decoder_ffn_dim"], config["decoder_layers"]
    rows = tokens + (config.get("num_global_tokens", 0) if config.get("pass_global_tokens_to_decoder", True) else 0)
    elements = layers * (6 * d * d + 2 * d * ffn) + config["vocab_size"] * d + 2 * layers * rows * d
    return elements * (4 if dtype == "float32" else 2)


def floors(limits: dict, config: dict, tokens: int, steps: int, dtype: str, batch: int = 1,
           stream: float | None = None) -> dict | None:
    """The row's floors in seconds (encoder, decode step, end to end), or None without the limits.
    stream: the GB/s to use for the step (the rate measured around the row), else the run's."""
    gemm = limits["gemm_gflops"].get(dtype)
    stream = stream or limits.get("stream_gbs")
    if not gemm or not stream:
        return None
    encoder = batch * encoder_flop(config, tokens) / (gemm * 1e9)
    step = batch * step_bytes(config, tokens, dtype) / (stream * 1e9)
    return {"encoder_s": encoder, "decode_step_s": step,
            "end_to_end_s": limits["start_s"] + encoder + (steps - 1) * step}


if __name__ == "__main__":
    import json

    args = [a for a in sys.argv[1:] if a != "--quick"]
    print(json.dumps(measure(int(args[0]) if args else None, quick="--quick" in sys.argv[1:])))
