"""bfloat16 against float32, for arxsum and for the seed pipeline (issue 18, item 5).

    .venv/bin/python benchmarks/fidelity.py --ref-python .venv-ref/bin/python          # 4096 and 16384 tokens
    .venv/bin/python benchmarks/fidelity.py --no-ref --tokens 1024 --papers 2 --steps 16 # arxsum only, small

On the bench's real-architecture checkpoint (random weights, `bench.ensure_checkpoint`) and the bench's
papers (`bench.make_inputs`: paper i is the same random ids as in every bench row), each side computes,
in a fresh process per dtype, the log-probabilities of the same fixed decoder tokens (the decoder start
token, then random ids), step by step through its own generation path: arxsum's DecoderState (the CPU
kernels and the measured plan, as beam search runs them), the seed's model with its cache as
generate() steps it. Then, per side and length, bfloat16 against float32 of the same side:

- |d logp|: the mean absolute error of the log-probability of the next forced token, and of the
  token float32 finds most likely (the one a search would take);
- KL: the mean Kullback-Leibler divergence KL(float32 || bfloat16) of the next-token distribution;
- top-1: the share of steps whose most likely token is the same.

The free-running agreement (bfloat16 summaries against float32 ones, token for token) is the bench's
own ("bfloat16 summary = float32 summary" under its tables). Results: bench-results/fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (a sibling file: the checkpoint, the papers, running the seed side)

DTYPES = ("float32", "bfloat16")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.side:
        spec = json.loads(Path(args.side).read_text())
        print(json.dumps(arxsum_side(spec)))
        return 0
    try:
        report = measure(args)
    except bench.BenchError as e:
        print(f"fidelity: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(render(report))
    print(f"results: {args.out}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384], help="input tokens per paper")
    parser.add_argument("--papers", type=int, default=3, help="papers per length (default 3)")
    parser.add_argument("--steps", type=int, default=48, help="forced decoder tokens (default 48)")
    parser.add_argument("--ref-python", help="the reference venv's python (the seed side)")
    parser.add_argument("--no-ref", action="store_true", help="arxsum only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=bench.ROOT / ".cache" / "bench")
    parser.add_argument("--out", type=Path, default=bench.ROOT / "bench-results" / "fidelity.json")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny checkpoint (a smoke test)")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # internal: one arxsum measurement
    args = parser.parse_args(argv)
    if not args.side and not args.no_ref and not args.ref_python:
        parser.error("--ref-python is needed for the seed side (or --no-ref)")
    return args


def forced_tokens(papers: int, steps: int, config: dict) -> list[list[int]]:
    """Per paper: the decoder start token, then random ids (seed 2000 + i)."""
    import torch

    out = []
    for i in range(papers):
        gen = torch.Generator().manual_seed(2000 + i)
        ids = torch.randint(5, config["vocab_size"], (steps,), generator=gen)
        ids[0] = config["decoder_start_token_id"]
        out.append(ids.tolist())
    return out


def measure(args: argparse.Namespace) -> dict:
    import torch

    ref = None if args.no_ref else args.ref_python
    checkpoint = bench.ensure_checkpoint(args.cache_dir, args.tiny, ref)
    config = json.loads((checkpoint / "config.json").read_text())
    sides = ["arxsum"] + (["seed"] if ref else [])
    report: dict = {"machine": bench.machine_info("cpu"), "papers": args.papers, "steps": args.steps, "lengths": []}
    with tempfile.TemporaryDirectory(prefix="arxsum-fidelity-") as tmp:
        work = Path(tmp)
        for tokens in args.tokens:
            inputs = bench.make_inputs(bench.Case("float32", tokens, args.papers, args.steps), config)
            forced = forced_tokens(args.papers, args.steps, config)
            entry: dict = {"tokens": tokens, "sides": {}}
            logprobs: dict = {}
            for side in sides:
                for dtype in DTYPES:
                    out = work / f"{side}-{dtype}-{tokens}.pt"
                    spec = {"checkpoint": str(checkpoint), "inputs": inputs, "dtype": dtype, "device": "cpu",
                            "threads": args.threads, "teacher_forced": {"decoder_ids": forced, "out": str(out)}}
                    path = work / "spec.json"
                    path.write_text(json.dumps(spec))
                    start = time.perf_counter()
                    command = ([sys.executable, str(Path(__file__).resolve()), "--side", str(path)] if side == "arxsum"
                               else [ref, str(bench.REF_SCRIPT), str(path)])
                    bench.run_command(command, f"the {side} side ({dtype}, {tokens} tokens)")
                    bench.say(f"{side} {dtype} {tokens} tokens: {time.perf_counter() - start:.1f} s")
                    logprobs[side, dtype] = torch.load(out, weights_only=True)
            targets = torch.tensor(forced)[:, 1:]  # step t predicts forced token t + 1
            for side in sides:
                entry["sides"][side] = errors(logprobs[side, "float32"], logprobs[side, "bfloat16"], targets)
            if ref:
                diff = (logprobs["arxsum", "float32"] - logprobs["seed", "float32"]).abs().max().item()
                entry["float32_arxsum_vs_seed_max_abs"] = diff
            report["lengths"].append(entry)
    return report


def errors(full, half, targets) -> dict:
    """full, half (papers, steps, vocab) log-probs; targets (papers, steps - 1): the next forced tokens."""

    full, half = full[:, :-1], half[:, :-1]  # the last step predicts past the forced tokens
    at = targets[..., None]
    forced = (full.gather(-1, at) - half.gather(-1, at)).abs()
    top = full.argmax(-1, keepdim=True)  # the token float32 would take
    at_top = (full.gather(-1, top) - half.gather(-1, top)).abs()
    kl = (full.exp() * (full - half)).sum(-1)
    top1 = (full.argmax(-1) == half.argmax(-1)).float()
    per_paper = top1.mean(-1).tolist()
    return {"mean_abs_logp_error": forced.mean().item(), "max_abs_logp_error": forced.max().item(),
            "mean_abs_logp_error_top": at_top.mean().item(), "mean_kl": kl.mean().item(), "top1_agreement": top1.mean().item(),
            "top1_agreement_per_paper": per_paper, "steps": int(top1.shape[1])}


def arxsum_side(spec: dict) -> dict:
    """Log-probs of the forced decoder tokens through DecoderState, as beam search steps it (one beam)."""
    import torch
    from common import padded

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from arxsum.decoding import new_state
    from arxsum.summarizer import Summarizer

    summarizer = Summarizer.from_pretrained(spec["checkpoint"], device="cpu", dtype=spec["dtype"])
    ids, mask = padded(spec["inputs"], summarizer.special.pad, torch)
    forced = torch.tensor(spec["teacher_forced"]["decoder_ids"])
    steps = []
    with torch.inference_mode():
        state = new_state(summarizer.model, ids, mask, 1, forced.shape[1])
        for t in range(forced.shape[1]):
            steps.append(state.step(forced[:, t]).float())
            state.reorder(torch.arange(forced.shape[0]))
    torch.save(torch.stack(steps, dim=1), spec["teacher_forced"]["out"])
    return {"saved": spec["teacher_forced"]["out"], "plan": str(getattr(summarizer, "cpu_plan", None))}


def render(report: dict) -> str:
    lines = [f"bfloat16 against float32, teacher-forced: {report['papers']} papers, {report['steps']} forced "
             f"tokens, same side's float32 as the reference",
             "",
             "| tokens | side | mean abs logp error, forced token (max) | at float32's top token | mean KL | top-1 agreement |",
             "|---|---|---|---|---|---|"]
    for entry in report["lengths"]:
        for side, e in entry["sides"].items():
            lines.append(f"| {entry['tokens']} | {side} | {e['mean_abs_logp_error']:.4f} ({e['max_abs_logp_error']:.3f}) | "
                         f"{e['mean_abs_logp_error_top']:.4f} | {e['mean_kl']:.5f} | {e['top1_agreement']:.1%} |")
    verdicts = []
    for entry in report["lengths"]:
        sides = entry["sides"]
        if "seed" in sides:
            ours, theirs = sides["arxsum"]["mean_kl"], sides["seed"]["mean_kl"]
            verdicts.append(f"{entry['tokens']} tokens: arxsum's KL {ours:.5f} vs the seed's {theirs:.5f} "
                            f"({'at most' if ours <= theirs else 'MORE than'} the seed's); float32 arxsum vs "
                            f"seed max |d logp| {entry['float32_arxsum_vs_seed_max_abs']:.2e}")
    return "\n".join(lines + [""] + verdicts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
