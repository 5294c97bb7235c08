"""The seed pipeline's side of `make bench`; runs only in the reference venv (.venv-ref).

    .venv-ref/bin/python benchmarks/ref_bench.py SPEC.json           # one measurement, JSON on stdout
    .venv-ref/bin/python benchmarks/ref_bench.py --save-tokenizer DIR  # rewrite DIR's tokenizer files

The seed pipeline is transformers 4.40.2 + lsg-converter 0.1.9, used as its model card shows:
`AutoTokenizer` + `LSGBartForConditionalGeneration.from_pretrained(dir)`, then `generate()` with
every generation argument stated. This file imports nothing from arxsum (it is not installed here)
and shares no code with benchmarks/bench.py: the spec's fields are the whole contract.

SPEC.json (written by bench.py): checkpoint (directory), inputs (token id lists, one per paper),
steps (min_length = max_length), num_beams, length_penalty, dtype, device, text (optional path:
the extracted paper, tokenized for the tokenization row).

With teacher_forced in the spec (see `teacher_forced`), the log-probabilities of fixed decoder
tokens instead, for benchmarks/fidelity.py.

Output, one JSON object on the last stdout line: import_s, load_s (imports included), tokenize_s, input_tokens, encoder_s,
generate_s, decode_step_s, peak_rss_mb, gpu_peak_mb, tokens (generated ids per paper), versions.
Each spec runs in a fresh process, so peak_rss_mb is this configuration's own.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import padded, peak_rss_mb, timed_tokenization  # noqa: E402  (a sibling file, in both venvs)

DTYPES = ("float32", "bfloat16", "float16")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--save-tokenizer":
        save_tokenizer(Path(argv[1]))
        return 0
    if len(argv) != 1:
        print("usage: ref_bench.py SPEC.json | ref_bench.py --save-tokenizer DIR", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    print(json.dumps(teacher_forced(spec) if spec.get("teacher_forced") else measure(spec)))
    return 0


def save_tokenizer(directory: Path) -> None:
    """Rewrite DIR's tokenizer (from vocab.json + merges.txt) as this transformers saves it, as the hub's
    files were written: the tokenizer.json of a newer `tokenizers` may not load here."""
    from transformers import BartTokenizerFast

    quiet()
    (directory / "tokenizer.json").unlink(missing_ok=True)
    tok = BartTokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"))
    tok.save_pretrained(str(directory))


def quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # lsg-converter's PretrainedBartModel import


def measure(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    start = time.perf_counter()  # load = the seed's imports (torch's is common to both sides) + tokenizer + weights
    quiet()
    from lsg_converter.bart.modeling_lsg_bart import LSGBartForConditionalGeneration
    from transformers import AutoTokenizer

    import_s = time.perf_counter() - start
    if spec["dtype"] not in DTYPES:
        raise SystemExit(f"unknown dtype {spec['dtype']!r}")
    device = torch.device(spec["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the reference venv's torch sees no CUDA device (.venv-ref installs the CPU build)")
    dtype = getattr(torch, spec["dtype"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"])
    model = LSGBartForConditionalGeneration.from_pretrained(spec["checkpoint"], torch_dtype=dtype)
    model = model.to(device).eval()
    sync()
    load_s = time.perf_counter() - start

    tokenize_s, input_tokens = timed_tokenization(spec, lambda text: int(tokenizer(
        text, truncation=True, max_length=model.config.max_position_embeddings, return_tensors="pt",
    )["input_ids"].shape[1]))

    ids, mask = padded(spec["inputs"], model.config.pad_token_id, torch)
    ids, mask = ids.to(device), mask.to(device)
    encoder_s = time_encoder(model.get_encoder(), sync)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = spec["steps"]
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, num_beams=spec["num_beams"],
                             length_penalty=spec["length_penalty"], min_length=steps, max_length=steps,
                             early_stopping=True, no_repeat_ngram_size=0, do_sample=False)
        sync()
        generate_s = time.perf_counter() - start
    return {
        "import_s": import_s,
        "load_s": load_s,
        "tokenize_s": tokenize_s,
        "input_tokens": input_tokens,
        "encoder_s": sum(encoder_s),
        "generate_s": generate_s,
        # after the encoder: steps - 1 decoder steps (the start token is given)
        "decode_step_s": (generate_s - sum(encoder_s)) / max(steps - 1, 1),
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "tokens": [strip_padding(row, model.config.pad_token_id) for row in out.tolist()],
        "threads": torch.get_num_threads(),
        "versions": versions(torch),
    }


def teacher_forced(spec: dict) -> dict:
    """The log-probabilities the seed's model gives each step of fixed decoder tokens, stepping with
    its cache as generate() does: spec teacher_forced = {"decoder_ids": one list per paper (decoder
    start token first), "out": a path}; saves (papers, steps, vocab) float32 with torch.save."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    quiet()
    from lsg_converter.bart.modeling_lsg_bart import LSGBartForConditionalGeneration

    model = LSGBartForConditionalGeneration.from_pretrained(spec["checkpoint"], torch_dtype=getattr(torch, spec["dtype"]))
    model = model.eval()
    ids, mask = padded(spec["inputs"], model.config.pad_token_id, torch)
    forced = torch.tensor(spec["teacher_forced"]["decoder_ids"])
    steps = []
    with torch.inference_mode():
        encoded = model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
        past = None
        for t in range(forced.shape[1]):
            out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=forced[:, t: t + 1],
                        past_key_values=past, use_cache=True, return_dict=True)
            past = out.past_key_values
            steps.append(torch.log_softmax(out.logits[:, -1].float(), dim=-1))
    torch.save(torch.stack(steps, dim=1), spec["teacher_forced"]["out"])
    return {"saved": spec["teacher_forced"]["out"], "versions": versions(torch)}


def time_encoder(encoder, sync) -> list[float]:
    """Time the encoder as generate() calls it, with forward hooks (filled during the generation)."""
    seconds: list[float] = []
    started: list[float] = []
    encoder.register_forward_pre_hook(lambda module, args: started.append(time.perf_counter()))

    def done(module, args, output):
        sync()
        seconds.append(time.perf_counter() - started.pop())

    encoder.register_forward_hook(done)
    return seconds




def strip_padding(row: list[int], pad: int) -> list[int]:
    """generate() pads shorter hypotheses of a batch on the right; arxsum returns them unpadded."""
    while row and row[-1] == pad:
        row = row[:-1]
    return row


def versions(torch) -> dict:
    from importlib.metadata import version

    return {"torch": torch.__version__, "transformers": version("transformers"),
            "lsg_converter": version("lsg-converter")}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
