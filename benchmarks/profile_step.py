"""Where the time goes: the encoder and the decoding step of the real architecture, random weights.

    PYTHONPATH=src python benchmarks/profile_step.py --device cuda --dtype bfloat16 --batch 32
    PYTHONPATH=src python benchmarks/profile_step.py --tokens 16384 --batch 1     # CPU, float32

Builds the model in memory (no checkpoint), encodes `batch` papers of `tokens` random ids, then runs
`steps` decoding steps with 5 beams per paper through DecoderState (reordering the caches with a fixed
permutation, as the search does). Prints the timings (medians) and, with --profile, the operator
tables of torch.profiler for one encoder pass and for the decoding steps. For finding the next
speed-up, not for reporting: `make bench` is the benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from arxsum.decoding import new_state
from arxsum.model import LSGBartConfig, LSGBartForConditionalGeneration
from arxsum.summarizer import use_cpu_fast_paths

REAL = dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=16384,
            block_size=256, num_global_tokens=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            decoder_start_token_id=2, activation_function="gelu", sparsity_type="none")


def build(device: torch.device, dtype: torch.dtype) -> LSGBartForConditionalGeneration:
    torch.manual_seed(0)
    model = LSGBartForConditionalGeneration(LSGBartConfig.from_dict(REAL))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.1)
    model = model.to(device=device, dtype=dtype).eval()
    if device.type == "cpu":  # as Summarizer.from_pretrained does (ARXSUM_CPU_KERNELS=0 turns the kernels off)
        print("plan:", use_cpu_fast_paths(model))
    return model


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    p.add_argument("--rows", type=int, default=25, help="rows of each profiler table")
    args = p.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = build(device, dtype)
    ids = torch.randint(5, REAL["vocab_size"], (args.batch, args.tokens), device=device)
    mask = torch.ones_like(ids)
    rows = args.batch * args.beams
    perm = torch.arange(rows, device=device).view(args.batch, args.beams).flip(1).reshape(-1)
    tokens = torch.full((rows,), 2, dtype=torch.long, device=device)

    def encode_and_steps(steps: int) -> tuple[float, list[float]]:
        sync()
        start = time.perf_counter()
        state = new_state(model, ids, mask, args.beams, steps + 1)
        sync()
        encoder_s = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            logp = state.step(tokens)
            torch.topk(logp.view(args.batch, -1), 2 * args.beams, dim=1)[0].tolist()
            state.reorder(perm)
            sync()
            times.append(time.perf_counter() - start)
        return encoder_s, times

    with torch.inference_mode():
        encode_and_steps(2)  # warm-up: kernels, allocator
        encoder_s, times = encode_and_steps(args.steps)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        print(f"{args.device} {args.dtype} batch {args.batch} x {args.tokens} tokens, {args.beams} beams: "
              f"encoder + cross K/V {encoder_s:.3f} s, decode step median {statistics.median(times) * 1e3:.2f} ms "
              f"(min {min(times) * 1e3:.2f}), GPU peak {peak:.0f} MB")
        if args.profile:
            activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
            key = "cuda_time_total" if cuda else "self_cpu_time_total"
            with torch.profiler.profile(activities=activities) as prof:
                encode_and_steps(min(args.steps, 16))
            print(prof.key_averages().table(sort_by=key, row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
