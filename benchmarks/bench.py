"""arxsum against the seed pipeline, side by side: same checkpoint, same input, same options.

    make bench                                  # the full CPU table (long: run it on a quiet machine)
    make bench ARGS="--quick"                   # real architecture at small sizes, a smoke run
    .venv/bin/python benchmarks/bench.py --tokens 1024 --steps 4 --dtype float32 --no-ref
    make gpu-check                              # --device cuda: papers per second at 16k tokens

The checkpoint is the published model's architecture (145M parameters, 50265 tokens) with random
weights, built once under --cache-dir. Random weights give flat logits whose near-ties a one-ulp
difference could flip, so they are made decisive (larger init, noisy norms and biases, a random
final logits bias), as the parity suite does; both sides read the same pytorch_model.bin. Even so,
the random decoder's prediction barely depends on its previous token: each summary is one token
repeated (which one depends on the paper). A step costs the same whatever the tokens, so the
timings stand, but the bf16 = fp32 fraction only means something on real weights.

Every configuration (a row) runs each side in its own fresh process, so peak RSS is that row's:
    arxsum:  this file with --worker SPEC.json, in our venv (Summarizer.from_pretrained + beam_search)
    seed:    benchmarks/ref_bench.py SPEC.json, in the reference venv (transformers 4.40.2 + lsg-converter)
Both read the same token ids (random, fixed seeds, <s> first and </s> last) and generate exactly
`steps` tokens (min_length = max_length), 5 beams, length penalty 2.0. The generation is timed whole
and its encoder call on its own; decode per step = (generation - encoder) / (steps - 1).
Extraction (arxsum only: the seed pipeline starts from text) and tokenization use a real paper:
its extracted text, tokenized with the checkpoint's tokenizer (a small BPE trained by the tests;
the model's inputs are the random ids, not this text).

stdout gets the tables (markdown); progress goes to stderr; everything lands in --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floors  # noqa: E402  (a sibling file)
from common import padded, peak_rss_mb, timed_tokenization  # noqa: E402  (a sibling file, in both venvs)

ROOT = Path(__file__).resolve().parent.parent
REF_SCRIPT = Path(__file__).resolve().parent / "ref_bench.py"
SAMPLE_PAPERS = ROOT.parent / "shared" / "samples" / "papers"
if not SAMPLE_PAPERS.is_dir():
    SAMPLE_PAPERS = Path("/work/shared/samples/papers")
SIDES = ("arxsum", "seed")

# Sizes: the full bench, --quick (real architecture, small), --tiny (the tests' tiny model).
PRESETS = {
    "full": {"tokens": 16384, "short_tokens": 4096, "steps": [64, 320], "batch": 4, "gpu_batches": [1, 8, 16, 32]},
    "quick": {"tokens": 1024, "short_tokens": 512, "steps": [8], "batch": 2, "gpu_batches": [1, 4]},
    "tiny": {"tokens": 256, "short_tokens": 64, "steps": [8], "batch": 2, "gpu_batches": [1, 4]},
}
DEFAULT_DTYPES = {"cpu": ["float32", "bfloat16"], "cuda": ["float32", "bfloat16", "float16"]}
GENERATION = {"num_beams": 5, "length_penalty": 2.0}  # the model card's; min = max length = steps

# The checkpoint recipe. Bump RECIPE when it changes, so cached checkpoints are rebuilt.
RECIPE = 1
ENCODER_SHAPE_TEXT = f"{floors.ENCODER_SHAPE[0]} x {floors.ENCODER_SHAPE[1]} @ {floors.ENCODER_SHAPE[1]} x {floors.ENCODER_SHAPE[2]}"
REAL_VOCAB = 50265
REAL_INIT_STD = 0.1  # BART's 0.02 gives near-uniform logits; 0.1 keeps activations finite in bf16 too
NOISE = 0.1  # layer norms = 1 + noise, biases = noise (a dropped bias or norm would show)
LOGITS_BIAS = 0.5  # a random final_logits_bias separates the top tokens


class BenchError(Exception):
    """A setup problem (missing venv, no GPU, a worker that crashed): one line on stderr, exit 1."""


@dataclass(frozen=True)
class Case:
    """One row: `batch` papers of `tokens` tokens each, `steps` generated tokens, in `dtype`."""

    dtype: str
    tokens: int
    batch: int
    steps: int
    ending: str = ""  # "" (every summary `steps` long) or how summaries may end early (--eos-bias)

    @property
    def name(self) -> str:
        return f"{self.dtype} {self.batch}x{self.tokens} {self.steps} steps" + (f" {self.ending}" if self.ending else "")


# ---- the plan ----------------------------------------------------------------------------------

def plan(settings: dict) -> list[Case]:
    """CPU: each dtype at `tokens` for every step count, a `short_tokens` row and a batch row.
    CUDA: each dtype at `tokens` for every GPU batch size (papers per second)."""
    longest = max(settings["steps"])
    ending = ""
    if settings["eos_bias"]:
        ending = f"eos+{settings['eos_bias']:g}" + ("" if settings["compaction"] else " no compaction")
    cases = []
    for dtype in settings["dtypes"]:
        if settings["device"] == "cuda":
            cases += [Case(dtype, settings["tokens"], b, longest, ending) for b in settings["gpu_batches"]]
            continue
        cases += [Case(dtype, settings["tokens"], 1, steps, ending) for steps in settings["steps"]]
        if settings["short_tokens"]:
            cases.append(Case(dtype, settings["short_tokens"], 1, longest, ending))
        if settings["batch"] > 1:
            cases.append(Case(dtype, settings["tokens"], settings["batch"], longest, ending))
    if settings["only"]:
        cases = [c for c in cases if any(part in c.name for part in settings["only"])]
    return cases


def make_inputs(case: Case, config: dict) -> list[list[int]]:
    """`batch` papers of random ids: paper i is the same in every row (seed 1000 + i), <s> ... </s>."""
    import torch

    papers = []
    for i in range(case.batch):
        gen = torch.Generator().manual_seed(1000 + i)
        ids = torch.randint(5, config["vocab_size"], (case.tokens,), generator=gen)
        ids[0], ids[-1] = config["bos_token_id"], config["eos_token_id"]
        papers.append(ids.tolist())
    return papers


# ---- the checkpoint ----------------------------------------------------------------------------

def ensure_checkpoint(cache_dir: Path, tiny: bool, ref_python: str | None) -> Path:
    """Build the random checkpoint once (config.json, pytorch_model.bin, tokenizer files); when the
    seed side runs, its tokenizer files are rewritten by the reference transformers, as the hub's were."""
    directory = cache_dir / f"{'tiny' if tiny else 'real'}-recipe{RECIPE}"
    if not (directory / "config.json").is_file():
        say(f"building the {'tiny' if tiny else 'real-architecture'} checkpoint in {directory} (once)")
        build_checkpoint(directory, tiny)
    marker = directory / "tokenizer-from-ref"
    if ref_python and not marker.exists():
        run_command([ref_python, str(REF_SCRIPT), "--save-tokenizer", str(directory)], "saving the tokenizer")
        marker.touch()
    return directory


def build_checkpoint(directory: Path, tiny: bool) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from builders import random_state_dict, real_architecture_config, tiny_config, train_tokenizer

    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    train_tokenizer(tmp)
    if tiny:
        config = tiny_config(len(json.loads((tmp / "vocab.json").read_text())))
    else:
        config = dict(real_architecture_config(vocab_size=REAL_VOCAB), init_std=REAL_INIT_STD)
    state = make_decisive(random_state_dict(config, seed=0), config, seed=1)
    shared = state["model.shared.weight"]  # the hub's .bin stores the tied embedding under every alias
    state.update({"model.encoder.embed_tokens.weight": shared, "model.decoder.embed_tokens.weight": shared,
                  "lm_head.weight": shared})
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(state, tmp / "pytorch_model.bin")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def make_decisive(state: dict, config: dict, seed: int) -> dict:
    """Norms and biases get random values and the final logits bias a random spread, so beams rarely tie."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for name, tensor in state.items():
        noise = torch.randn(tensor.shape, generator=gen)
        if ("layer_norm" in name or "layernorm" in name) and name.endswith(".weight"):
            state[name] = 1 + NOISE * noise
        elif name.endswith(".bias"):
            state[name] = NOISE * noise
        elif name == "final_logits_bias":
            state[name] = LOGITS_BIAS * noise
    return state


# ---- running the sides -------------------------------------------------------------------------

def run_command(command: list[str], what: str) -> str:
    """stdout of a command; a failure becomes a BenchError with the tail of its stderr."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        raise BenchError(f"{what}: cannot run {command[0]}: {e}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def run_side(side: str, spec: dict, settings: dict, workdir: Path) -> dict:
    """One measurement in a fresh process; its JSON result."""
    path = workdir / f"spec-{side}.json"
    path.write_text(json.dumps(spec))
    if side == "arxsum":
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(path)]
    else:
        command = [settings["ref_python"], str(REF_SCRIPT), str(path)]
    out = run_command(command, f"the {side} side")
    return json.loads(out.strip().splitlines()[-1])


def measure_case(case: Case, checkpoint: Path, config: dict, settings: dict, text: Path | None,
                 workdir: Path) -> dict:
    """Each side `runs` times, alternating; the median of every figure. A failed side is recorded."""
    spec = {"checkpoint": str(checkpoint), "inputs": make_inputs(case, config), "steps": case.steps,
            "dtype": case.dtype, "device": settings["device"], "text": str(text) if text else None,
            "threads": settings["threads"], "eos_bias": settings["eos_bias"], "compaction": settings["compaction"],
            **GENERATION}
    sides = [s for s in SIDES if s == "arxsum" or settings["ref_python"]]
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    errors: dict[str, str] = {}
    for r in range(settings["runs"]):
        for side in sides:
            if side in errors:
                continue
            start = time.perf_counter()
            around = side == "arxsum" and settings["device"] == "cpu"
            before = stream_now(settings) if around else None
            try:
                result = run_side(side, spec, settings, workdir)
            except BenchError as e:
                errors[side] = str(e)
                say(f"  {side}: FAILED: {e}")
                continue
            if result.get("error"):  # out of memory: a finding, not a failure of the bench
                errors[side] = result["error"]
                say(f"  {side}: {result['error']}")
                continue
            after = stream_now(settings) if around else None
            if before and after:  # the memory's rate while the row ran: a VM's drifts within minutes
                result["stream_gbs_around"] = [before, after]
                result["stream_gbs_row"] = (before + after) / 2
            runs[side].append(result)
            say(f"  {side} run {r + 1}/{settings['runs']}: generation {result['generate_s']:.2f} s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB ({time.perf_counter() - start:.1f} s in all)")
    row = {"name": case.name, **asdict(case)}
    for side in sides:
        if side in errors:
            row[side] = {"error": errors[side], "out_of_memory": "out of memory" in errors[side]}
        else:
            row[side] = summarize_runs(runs[side], case)
    return row


def stream_now(settings: dict) -> float | None:
    """The memory stream rate now, measured in this process (no worker running) with the workers'
    thread count: floors.stream_gbs."""
    import torch

    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    return floors.stream_gbs(quick=settings["tiny"])


def summarize_runs(runs: list[dict], case: Case) -> dict:
    """The median of each figure over the runs; tokens from the first run (and whether all agree)."""
    numeric = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: statistics.median(r[k] for r in runs) for k in numeric}
    out.update({k: v for k, v in runs[0].items() if k not in out and k != "tokens"})
    out["end_to_end_s"] = out["load_s"] + (out.get("tokenize_s") or 0.0) + out["generate_s"]
    out["papers_per_s"] = case.batch / out["generate_s"]
    out["tokens"] = runs[0]["tokens"]
    out["same_tokens_every_run"] = all(r["tokens"] == runs[0]["tokens"] for r in runs)
    out["runs"] = [{k: v for k, v in r.items() if k != "tokens"} for r in runs]
    return out


def compare(row: dict) -> None:
    """arxsum vs seed on one row: speed-ups, memory ratio, identical tokens."""
    a, s = row.get("arxsum", {}), row.get("seed", {})
    if "tokens" not in a or "tokens" not in s:
        return
    row["speedup_end_to_end"] = s["end_to_end_s"] / a["end_to_end_s"]
    row["speedup_generate"] = s["generate_s"] / a["generate_s"]
    row["peak_rss_ratio"] = a["peak_rss_mb"] / s["peak_rss_mb"]
    row["tokens_identical"] = a["tokens"] == s["tokens"]
    row["papers_identical"] = sum(x == y for x, y in zip(a["tokens"], s["tokens"]))


def shape(row: dict) -> tuple:
    """What pairs a row of another dtype with its float32 row: same inputs, steps and ending."""
    return row["tokens"], row["batch"], row["steps"], row.get("ending", "")


def against_seed_float32(rows: list[dict]) -> None:
    """Non-float32 rows: arxsum's end-to-end speed-up over the seed pipeline in float32 (its default)."""
    seed32 = {shape(r): r.get("seed", {}) for r in rows if r["dtype"] == "float32"}
    for row in rows:
        base = seed32.get(shape(row), {})
        if row["dtype"] != "float32" and "end_to_end_s" in base and "end_to_end_s" in row.get("arxsum", {}):
            row["speedup_vs_seed_float32"] = base["end_to_end_s"] / row["arxsum"]["end_to_end_s"]


def precision(rows: list[dict]) -> dict:
    """For every non-float32 row with a float32 row of the same shape: how many papers' summaries
    equal the float32 ones token for token, per side (and the mean length of the common prefix)."""
    reference = {shape(r): r for r in rows if r["dtype"] == "float32"}
    totals: dict = {}
    for row in rows:
        base = reference.get(shape(row))
        if row["dtype"] == "float32" or base is None:
            continue
        row["equals_float32"] = {}
        for side in SIDES:
            ours, theirs = row.get(side, {}).get("tokens"), base.get(side, {}).get("tokens")
            if ours is None or theirs is None:
                continue
            equal = sum(x == y for x, y in zip(ours, theirs))
            prefix = [common_prefix(x, y) for x, y in zip(ours, theirs)]
            row["equals_float32"][side] = {"equal": equal, "papers": len(ours)}
            t = totals.setdefault(row["dtype"], {}).setdefault(side, {"equal": 0, "papers": 0, "prefix": []})
            t["equal"] += equal
            t["papers"] += len(ours)
            t["prefix"] += prefix
    for sides in totals.values():
        for t in sides.values():
            t["fraction"] = t["equal"] / t["papers"]
            t["mean_common_prefix"] = statistics.mean(t.pop("prefix"))
    return totals


def common_prefix(x: list[int], y: list[int]) -> int:
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


# ---- extraction --------------------------------------------------------------------------------

def measure_extraction(paper: Path, workdir: Path) -> dict:
    """Extraction + normalisation of one real paper, in a fresh arxsum process; writes the model text
    to workdir/paper.txt, for the tokenization row."""
    text = workdir / "paper.txt"
    out = run_command([sys.executable, str(Path(__file__).resolve()), "--extract", str(paper), str(text)],
                      f"extracting {paper}")
    return json.loads(out.strip().splitlines()[-1])


def extract_worker(paper: str, out: str) -> dict:
    from arxsum.extract import extract
    from arxsum.normalize import to_model_text

    data = Path(paper).read_bytes()
    start = time.perf_counter()
    doc = extract(data, paper)
    text = to_model_text(doc).text
    seconds = time.perf_counter() - start
    Path(out).write_text(text, encoding="utf-8")
    return {"paper": paper, "extract_s": seconds, "pages": doc.pages, "chars": len(text)}


# ---- end to end: a folder of papers through the runner ------------------------------------------

def copy_papers(n: int, folder: Path, samples: Path = SAMPLE_PAPERS) -> list[Path]:
    """`n` copies of the sample PDFs under new names (paper-0000-<name>.pdf, ...), in order."""
    pdfs = sorted(samples.glob("*.pdf"))
    if not pdfs:
        raise BenchError(f"--folder: no sample papers in {samples} (--samples DIR)")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"paper-{i:04d}-{pdfs[i % len(pdfs)].name}"
        shutil.copyfile(pdfs[i % len(pdfs)], path)
        paths.append(path)
    return paths


def measure_folder(settings: dict, checkpoint: Path, workdir: Path) -> dict:
    """The folder run, in a fresh process (this file with --folder-worker SPEC.json)."""
    folder = workdir / "papers"
    copy_papers(settings["folder"], folder, Path(settings["samples"]))
    spec = {"checkpoint": str(checkpoint), "folder": str(folder), "out": str(workdir / "summaries"),
            "device": settings["device"], "dtype": settings["dtypes"][0], "batch": settings["folder_batch"],
            "steps": max(settings["steps"]), "eos_bias": settings["eos_bias"], "page_cut": settings["page_cut"],
            "refill": settings["refill"],
            **GENERATION}
    path = workdir / "spec-folder.json"
    path.write_text(json.dumps(spec))
    out = run_command([sys.executable, str(Path(__file__).resolve()), "--folder-worker", str(path)], "the folder run")
    return json.loads(out.strip().splitlines()[-1])


def folder_worker(spec: dict) -> dict:
    """`arxsum DIR --output-dir OUT -f json` as the CLI runs it (runner.run, the CLI's RunConfig
    fields), timed from the run's start (imports done) to its end. Summaries are `steps` tokens long
    (min = max length) as in the model-only rows, or end apart with eos_bias (min length 1)."""
    import torch

    from arxsum.options import GenerationOptions
    from arxsum.runner import RunConfig, run
    from arxsum.summarizer import Summarizer

    device = torch.device(spec["device"])

    def load():
        summarizer = Summarizer.from_pretrained(spec["checkpoint"], device=spec["device"], dtype=spec["dtype"])
        if spec["eos_bias"]:
            summarizer.model.final_logits_bias[0, summarizer.special.eos] += spec["eos_bias"]
        return summarizer

    options = GenerationOptions(num_beams=spec["num_beams"], length_penalty=spec["length_penalty"],
                                min_length=1 if spec["eos_bias"] else spec["steps"], max_length=spec["steps"])
    cfg = RunConfig(inputs=[spec["folder"]], output_dir=Path(spec["out"]), format="json", quiet=True,
                    batch_size=spec["batch"], options=options, device=spec["device"], model=spec["checkpoint"],
                    page_cut=spec["page_cut"], refill=spec["refill"])
    from arxsum.runner import default_workers, model_device

    start = time.perf_counter()
    report = run(cfg, load_summarizer=load)
    seconds = time.perf_counter() - start
    done = report.count("done")
    records = [json.loads(p.read_text()) for p in sorted(Path(spec["out"]).glob("*.json"))]
    return {
        "papers": len(report.outcomes), "done": done, "failed": len(report.failures),
        "seconds": seconds, "papers_per_s": done / seconds,
        # from the model's loading on: what the model-only rows time (they start from loaded weights)
        "model_s": report.model_s, "papers_per_s_loaded": done / report.model_s if report.model_s else None,
        "model_wait_s": report.model_wait_s,
        "model_wait_share": report.model_wait_s / report.model_s if report.model_s else None,
        "workers": default_workers(model_device(spec["device"])), "batch": spec["batch"],
        # the runner cuts pages only for a model on CUDA (runner.extract_options)
        "page_cut": spec["page_cut"] and model_device(spec["device"]).startswith("cuda"),
        "eos_bias": spec["eos_bias"], "refill": spec["refill"],
        "mean_input_tokens": statistics.mean(r["input_tokens"] for r in records) if records else None,
        "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "peak_rss_mb": peak_rss_mb(),
    }


def model_only_row(rows: list[dict], settings: dict) -> dict | None:
    """The model-only row of the folder's batch size and dtype (its papers/s), if one ran."""
    for row in rows:
        if row["batch"] == settings["folder_batch"] and row["dtype"] == settings["dtypes"][0] \
                and "error" not in row.get("arxsum", {"error": ""}):
            return {"name": row["name"], "papers_per_s": row["arxsum"]["papers_per_s"]}
    return None


# ---- the arxsum side (runs in its own process) -------------------------------------------------

def arxsum_worker(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    start = time.perf_counter()  # load = our imports (torch's is common to both sides) + tokenizer + weights
    import tokenizers  # noqa: F401  (what load_tokenizer imports: timed as an import)

    from arxsum.decoding import GenerationOptions, GraphedDecoderState, beam_search
    from arxsum.summarizer import Summarizer

    import_s = time.perf_counter() - start
    summarizer = Summarizer.from_pretrained(spec["checkpoint"], device=spec["device"], dtype=spec["dtype"])
    sync()
    load_s = time.perf_counter() - start

    # truncated to the model's positions, as the CLI does
    tokenize_s, input_tokens = timed_tokenization(spec, lambda text: len(summarizer.encode(text).ids))

    model, special = summarizer.model, summarizer.special
    ids, mask = padded(spec["inputs"], special.pad, torch)
    ids, mask = ids.to(device), mask.to(device)
    if spec["eos_bias"]:  # summaries may end early, each document at its own step
        model.final_logits_bias[0, special.eos] += spec["eos_bias"]
    if not spec["compaction"]:  # a CUDA batch keeps computing its finished documents to the end
        GraphedDecoderState.compact_at = 0.0
    options = GenerationOptions(num_beams=spec["num_beams"], length_penalty=spec["length_penalty"],
                                min_length=1 if spec["eos_bias"] else spec["steps"], max_length=spec["steps"])
    encoder_s = timed_calls(model, "encode", sync)  # as beam_search calls it
    # the cross-attention keys and values, once per document after the encoder: in the encoder's floor
    # (their FLOPs are counted there), not in a decoding step's
    cross_kv_s = timed_calls(model, "cross_kv", sync)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        start = time.perf_counter()
        tokens = beam_search(model, ids, mask, options, special)
        sync()
        generate_s = time.perf_counter() - start
    except torch.cuda.OutOfMemoryError:
        return {"error": f"CUDA out of memory at batch {ids.shape[0]}", "out_of_memory": True}
    return {
        "import_s": import_s,
        "load_s": load_s,
        "tokenize_s": tokenize_s,
        "input_tokens": input_tokens,
        "encoder_s": sum(encoder_s),
        "generate_s": generate_s,
        # after the encoder: cross-attention keys/values, then one decoder step per token after the start token
        "decode_step_s": (generate_s - sum(encoder_s)) / max(max(map(len, tokens)) - 1, 1),
        "cross_kv_s": sum(cross_kv_s),
        # the floors' phases: encoder + cross K/V (the FLOPs of both), and a step without the cross K/V
        "encoder_cross_kv_s": sum(encoder_s) + sum(cross_kv_s),
        "step_s": (generate_s - sum(encoder_s) - sum(cross_kv_s)) / max(max(map(len, tokens)) - 1, 1),
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "tokens": tokens,
        "mean_length": sum(map(len, tokens)) / len(tokens),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__},
    }


def timed_calls(model, name: str, sync) -> list[float]:
    """The seconds of each call of model.<name> from now on (a list filled during the generation)."""
    seconds: list[float] = []
    method = getattr(model, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = method(*args, **kwargs)
        sync()
        seconds.append(time.perf_counter() - start)
        return out

    setattr(model, name, timed)  # an instance attribute: shadows the method for this process only
    return seconds




# ---- machine and report ------------------------------------------------------------------------

def machine_info(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "git": git_commit()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1))
    return info


def cpu_model() -> str:
    from arxsum.cpukernels import cpuinfo

    return cpuinfo("model name") or platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def fmt(value, spec: str = ".2f", scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render(report: dict) -> str:
    """The markdown tables: timings per side, then arxsum vs seed per row, then precision."""
    cuda = report["settings"]["device"] == "cuda"
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores_usable']} cores, {m['memory_gb']} GB"
           + (f", {m['gpu']} ({m['gpu_memory_gb']} GB)" if cuda else "")
           + f"; torch {m['torch']}; arxsum {m['git']}; median of {report['settings']['runs']} run(s)."]
    ex = report.get("extraction")
    if ex:
        out.append(f"Extraction (arxsum; the seed pipeline starts from text): {Path(ex['paper']).name}, "
                   f"{ex['pages']} pages -> {ex['chars']} characters in {ex['extract_s']:.2f} s.")
    header = ["row", "side", "load s", "tokenize ms", "encoder s", "decode ms/step", "generate s",
              "end to end s", "papers/s", "peak RSS MB"] + (["GPU peak MB"] if cuda else [])
    body = []
    for row in report["rows"]:
        for side in SIDES:
            r = row.get(side)
            if r is None:
                continue
            if "error" in r:
                body.append([row["name"], side, f"failed: {r['error'].splitlines()[-1]}"] + [""] * (len(header) - 3))
                continue
            body.append([row["name"], side, fmt(r["load_s"]), fmt(r["tokenize_s"], ".1f", 1e3), fmt(r["encoder_s"]),
                         fmt(r["decode_step_s"], ".1f", 1e3), fmt(r["generate_s"]), fmt(r["end_to_end_s"]),
                         fmt(r["papers_per_s"], ".3f"), fmt(r["peak_rss_mb"], ".0f")]
                        + ([fmt(r["gpu_peak_mb"], ".0f")] if cuda else []))
    if body:
        out += ["", table(header, body)]
    if any("speedup_end_to_end" in r for r in report["rows"]):
        header = ["row", "speed-up end to end", "speed-up generate", "vs seed float32", "peak RSS arxsum/seed",
                  "tokens identical", "= float32 (arxsum, seed)"]
        body = [[r["name"], times(r.get("speedup_end_to_end")), times(r.get("speedup_generate")),
                 times(r.get("speedup_vs_seed_float32")), fmt(r.get("peak_rss_ratio"), ".2f"),
                 yes_no(r.get("tokens_identical"), r), equals_fp32(r)] for r in report["rows"]]
        out += ["", table(header, body)]
    lim = report.get("limits")
    if lim and lim.get("stream_gbs"):
        gemm = ", ".join(f"{k} {v:.0f}" for k, v in lim["gemm_gflops"].items())
        out.append(f"\nThis machine's limits, measured in this run ({lim['threads']} threads): memory stream "
                   f"{lim['stream_gbs']:.1f} GB/s; GEMM {ENCODER_SHAPE_TEXT} GFLOP/s {gemm}; python + torch start "
                   f"{lim['start_s']:.2f} s.")
        header = ["row", "stream GB/s around it", "encoder + cross K/V s (floor, reached)",
                  "decoding step ms (floor, reached)", "end to end s + start (floor, reached)"]
        body = [[r["name"], fmt(r.get("floor_stream_gbs"), ".1f")]
                + [f"{fmt(r['measured_phases'][k], spec, scale)} ({fmt(r['floor'][k], spec, scale)}, "
                   f"{r['fraction_of_floor'].get(k, 0):.0%})"
                   for k, spec, scale in (("encoder_s", ".2f", 1), ("decode_step_s", ".1f", 1e3),
                                          ("end_to_end_s", ".2f", 1))]
                for r in report["rows"] if "floor" in r]
        out += ["", table(header, body)]
    folder = report.get("folder")
    if folder:
        only = folder.get("model_only")
        beside = (f"; model only ({only['name']}): {only['papers_per_s']:.2f} papers/s, end to end from the "
                  f"model's loading {folder['papers_per_s_loaded'] / only['papers_per_s']:.0%} of it"
                  if only and folder.get("papers_per_s_loaded") else "")
        out.append(f"\nEnd to end, {folder['done']}/{folder['papers']} papers in {folder['seconds']:.1f} s: "
                   f"{folder['papers_per_s']:.2f} papers/s ({fmt(folder['papers_per_s_loaded'])} from the model's "
                   f"loading){beside}; the model waited {fmt(folder['model_wait_s'], '.1f')} s for extraction "
                   f"({fmt(folder['model_wait_share'], '.0%')}); {folder['workers']} extraction processes, batches of "
                   f"{folder['batch']} ({'refilled' if folder['refill'] else 'drained'}), page cut "
                   f"{'on' if folder['page_cut'] else 'off'}; GPU peak "
                   f"{fmt(folder['gpu_peak_mb'], '.0f')} MB.")
    for dtype, sides in report.get("precision", {}).items():
        parts = [f"{side} {t['equal']}/{t['papers']} (mean common prefix {t['mean_common_prefix']:.1f} tokens)"
                 for side, t in sides.items()]
        out.append(f"\n{dtype} summary = float32 summary, token for token: " + "; ".join(parts))
    return "\n".join(out)


def times(value) -> str:
    return "—" if value is None else f"{value:.2f}x"


def yes_no(value, row: dict) -> str:
    if value is None:
        return "—"
    return "yes" if value else f"no ({row['papers_identical']}/{row['batch']} papers)"


def equals_fp32(row: dict) -> str:
    eq = row.get("equals_float32")
    if not eq:
        return "—"
    return ", ".join(f"{v['equal']}/{v['papers']}" for v in eq.values())


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the command -------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="arxsum vs the seed pipeline (transformers 4.40.2 + lsg-converter)")
    p.add_argument("--tokens", type=int, help="input tokens per paper (default 16384)")
    p.add_argument("--short-tokens", type=int, help="tokens of the extra short row; 0 for none (default 4096)")
    p.add_argument("--steps", type=int, nargs="+", help="generated tokens, min = max length (default 64 320)")
    p.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16", "float16"],
                   help="default float32 bfloat16 (cpu), float32 bfloat16 float16 (cuda)")
    p.add_argument("--batch", type=int, help="papers in the batch row; 1 for none (default 4)")
    p.add_argument("--gpu-batches", type=int, nargs="+", help="--device cuda: batch sizes (default 1 8 16 32)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--ref-python", help="the reference venv's python (the seed pipeline side)")
    p.add_argument("--no-ref", action="store_true", help="arxsum only")
    p.add_argument("--with-ref", action="store_true", help="--device cuda: run the seed side too")
    p.add_argument("--eos-bias", type=float, default=0.0,
                   help="raise the EOS logit by this much and let summaries end early (min length 1): the "
                        "documents of a batch finish apart, as real ones do; 0 (default): all `steps` long")
    p.add_argument("--no-compaction", action="store_true",
                   help="with --eos-bias on CUDA: never compact the batch to its live rows (for comparison)")
    p.add_argument("--runs", type=int, default=1, help="runs per side and row; the median is reported")
    p.add_argument("--threads", type=int, help="torch threads on both sides (default: torch's)")
    p.add_argument("--only", nargs="+", help="rows whose name contains any of these strings")
    p.add_argument("--paper", default=None, help="PDF/LaTeX/text for the extraction and tokenization rows, "
                   f"or 'none' (default: the first PDF in {SAMPLE_PAPERS})")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.json")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "bench")
    p.add_argument("--quick", action="store_true", help="real architecture at small sizes (1024 tokens, 8 steps)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny model at tiny sizes (a smoke test)")
    p.add_argument("--folder", type=int, default=0, metavar="N",
                   help="end to end: N copies of the sample papers under new names, summarized by arxsum's runner "
                        "(as `arxsum DIR --output-dir OUT`) with this checkpoint, in a fresh process; papers/s, the "
                        "model's wait for extraction, GPU peak memory (0: none)")
    p.add_argument("--folder-batch", type=int, help="--folder: papers per batch (default: the largest --gpu-batches "
                   "on cuda, 1 on cpu)")
    p.add_argument("--folder-only", action="store_true", help="--folder without the model-only rows")
    p.add_argument("--no-page-cut", action="store_true", help="--folder: extract every page (up to --max-pages)")
    p.add_argument("--no-refill", action="store_true", help="--folder: batches drain before the next papers start "
                   "(RunConfig.refill off: compaction only), to compare with refill")
    p.add_argument("--samples", type=Path, default=SAMPLE_PAPERS, help=f"--folder: where the sample PDFs are "
                   f"(default {SAMPLE_PAPERS})")
    return p.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> dict:
    """Flags over the preset (--tiny, --quick or full sizes); the checks a user can fail."""
    preset = PRESETS["tiny" if args.tiny else "quick" if args.quick else "full"]
    pick = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in preset.items()}
    ref_python = None if args.no_ref or (args.device == "cuda" and not args.with_ref) else args.ref_python
    if ref_python is None and not args.no_ref and args.device == "cpu":
        raise BenchError("give --ref-python PATH (the reference venv's python), or --no-ref for arxsum only")
    if ref_python and args.eos_bias:
        raise BenchError("--eos-bias changes arxsum's model only: run it with --no-ref")
    if args.folder < 0 or (args.folder_batch is not None and args.folder_batch < 1):
        raise BenchError("--folder must be 0 or more, --folder-batch at least 1")
    if (args.folder_only or args.no_page_cut or args.folder_batch or args.no_refill) and not args.folder:
        raise BenchError("--folder-only, --folder-batch, --no-page-cut and --no-refill go with --folder N "
                         "(the model-only rows have no queue of papers to refill from)")
    if args.no_compaction and not args.eos_bias:
        raise BenchError("--no-compaction only means something with --eos-bias")
    if ref_python and not Path(ref_python).is_file():
        raise BenchError(f"--ref-python {ref_python}: no such file (make ref-venv builds .venv-ref)")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError("--device cuda: torch sees no CUDA device (is this the CUDA build of torch?)")
    dtypes = args.dtype or DEFAULT_DTYPES[args.device]
    if args.device == "cpu" and "float16" in dtypes:
        raise BenchError("float16 is for GPUs; on the CPU use float32 and bfloat16")
    if min(pick["steps"]) < 2 or pick["tokens"] < 2 or args.runs < 1:
        raise BenchError("--steps and --tokens must be at least 2, --runs at least 1")
    paper = args.paper
    if paper is None:
        pdfs = sorted(SAMPLE_PAPERS.glob("*.pdf"))
        paper = str(pdfs[0]) if pdfs else "none"
    if paper != "none" and not Path(paper).is_file():
        raise BenchError(f"--paper {paper}: no such file")
    return {**pick, "dtypes": dtypes, "device": args.device, "ref_python": ref_python, "runs": args.runs,
            "threads": args.threads, "only": args.only, "paper": None if paper == "none" else paper,
            "tiny": args.tiny, "generation": GENERATION, "eos_bias": args.eos_bias,
            "compaction": not args.no_compaction, "folder": args.folder, "folder_only": args.folder_only,
            "folder_batch": args.folder_batch or (max(pick["gpu_batches"]) if args.device == "cuda" else 1),
            "page_cut": not args.no_page_cut, "samples": str(args.samples), "refill": not args.no_refill}


def bench(settings: dict, cache_dir: Path, out: Path) -> dict:
    cases = [] if settings.get("folder_only") else plan(settings)
    if not cases and not settings.get("folder"):
        raise BenchError("no rows to run (check --only)")
    checkpoint = ensure_checkpoint(cache_dir, settings["tiny"], settings["ref_python"])
    config = json.loads((checkpoint / "config.json").read_text())
    if cases and max(c.tokens for c in cases) > config["max_position_embeddings"]:
        raise BenchError(f"--tokens is more than the checkpoint's {config['max_position_embeddings']} positions")
    report = {"settings": settings, "machine": machine_info(settings["device"]), "checkpoint": str(checkpoint),
              "rows": []}
    with tempfile.TemporaryDirectory(prefix="arxsum-bench-") as tmp:
        workdir = Path(tmp)
        if settings["device"] == "cpu" and cases:
            report["limits"] = measure_limits(settings, cache_dir, checkpoint, sorted({c.dtype for c in cases}))
        text = None
        if settings["paper"] and cases:
            report["extraction"] = measure_extraction(Path(settings["paper"]), workdir)
            text = workdir / "paper.txt"
        for i, case in enumerate(cases, 1):
            say(f"[{i}/{len(cases)}] {case.name}")
            row = measure_case(case, checkpoint, config, settings, text, workdir)
            compare(row)
            against_floor(row, report.get("limits"), config)
            report["rows"].append(row)
            write_json(report, out)  # after every row: a long run that dies keeps what it measured
        if settings.get("folder"):
            say(f"end to end: {settings['folder']} papers through arxsum's runner, batches of {settings['folder_batch']}")
            report["folder"] = measure_folder(settings, checkpoint, workdir)
            report["folder"]["model_only"] = model_only_row(report["rows"], settings)
            write_json(report, out)
    report["precision"] = precision(report["rows"])
    against_seed_float32(report["rows"])
    write_json(report, out)
    return report


def measure_limits(settings: dict, cache_dir: Path, checkpoint: Path, dtypes: list[str]) -> dict:
    """This machine's stream and GEMM rates (floors.py, a fresh process), after the workers' kernels
    are built and their CPU plan measured afresh (cpuplan, into the bench's own cache: not the
    user's, and not a plan measured on another day), so that no timed row pays for either."""
    arxsum_cache = cache_dir / "arxsum"
    os.environ["ARXSUM_CACHE_DIR"] = str(arxsum_cache)  # the workers inherit it
    for old in (arxsum_cache / "kernels").glob("plan-*.json"):
        old.unlink()
    for dtype in dtypes:
        say(f"measuring the CPU plan for {dtype}")
        run_command([sys.executable, str(Path(__file__).resolve()), "--prepare", str(checkpoint), dtype],
                    "preparing the CPU plan")
    say("measuring this machine's limits: memory stream, GEMM, python + torch start")
    command = [sys.executable, str(Path(__file__).resolve().parent / "floors.py")]
    if settings["threads"]:
        command.append(str(settings["threads"]))
    if settings["tiny"]:
        command.append("--quick")
    return json.loads(run_command(command, "the floor measurement").strip().splitlines()[-1])


PREPARE_TRIES = 3  # measurements of the plan before the rows go on without a saved one


def prepare_worker(checkpoint: str, dtype: str) -> dict:
    """The CPU plan measured and saved for the workers. A plan measured while the machine was busy
    is not saved (cpuplan.busy): every worker would then measure its own, inside its timed load
    (seen: 6 s instead of 0.5), so it is measured again, up to PREPARE_TRIES times."""
    from arxsum import cpuplan
    from arxsum.summarizer import Summarizer

    for attempt in range(1, PREPARE_TRIES + 1):
        plan = Summarizer.from_pretrained(checkpoint, device="cpu", dtype=dtype, notify=say).cpu_plan
        if plan is None or not cpuplan.busy(plan):
            break
        say(f"the CPU plan was measured on a busy machine (try {attempt} of {PREPARE_TRIES})"
            + ("" if attempt < PREPARE_TRIES else ": each row measures its own, inside its load time"))
    return {"plan": None if plan is None else plan.choices(), "tries": attempt}


def against_floor(row: dict, limits: dict | None, config: dict) -> None:
    """arxsum's encoder, decode step and end to end beside this machine's floors, and the fractions."""
    a = row.get("arxsum", {})
    stream = a.get("stream_gbs_row")  # measured just before and after the row; else the run's
    floor = limits and floors.floors(limits, config, row["tokens"], row["steps"], row["dtype"], row["batch"],
                                     stream=stream)
    if not floor or "error" in a:
        return
    row["floor"] = floor
    row["floor_stream_gbs"] = stream or limits["stream_gbs"]
    measured = {"encoder_s": a.get("encoder_cross_kv_s", a["encoder_s"]),  # floors' phases (see arxsum_worker)
                "decode_step_s": a.get("step_s", a["decode_step_s"]),
                "end_to_end_s": a["end_to_end_s"] + limits["start_s"]}  # a command's run: python + torch too
    row["measured_with_start"] = measured["end_to_end_s"]
    row["measured_phases"] = measured
    row["fraction_of_floor"] = {k: floor[k] / measured[k] for k in floor if measured.get(k)}


def write_json(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"] and len(argv) == 2:
        print(json.dumps(arxsum_worker(json.loads(Path(argv[1]).read_text()))))
        return 0
    if argv[:1] == ["--prepare"] and len(argv) == 3:
        print(json.dumps(prepare_worker(argv[1], argv[2])))
        return 0
    if argv[:1] == ["--folder-worker"] and len(argv) == 2:
        print(json.dumps(folder_worker(json.loads(Path(argv[1]).read_text()))))
        return 0
    if argv[:1] == ["--extract"] and len(argv) == 3:
        print(json.dumps(extract_worker(argv[1], argv[2])))
        return 0
    args = parse_args(argv)
    try:
        settings = resolve_settings(args)
        report = bench(settings, args.cache_dir, args.out)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    print(render(report))
    say(f"results: {args.out}")
    failed = [r["name"] for r in report["rows"]
              if any("error" in r.get(s, {}) and not r[s]["out_of_memory"] for s in SIDES)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
