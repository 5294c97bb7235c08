"""The reference side of the parity suite; runs only in the reference venv (.venv-ref).

    .venv-ref/bin/python tests/reference/driver.py SPEC.json OUT_DIR

It imports the model the checkpoint was published with (lsg-converter 0.1.9 on transformers 4.40.2)
as an installed package, and nothing from arxsum or tests/. From SPEC.json (written by
tests/test_parity.py) it

1. builds each checkpoint with `LSGBartForConditionalGeneration(LSGBartConfig(...))`, makes its
   random weights decisive (see `make_decisive`), and writes it with `save_pretrained` as
   model.safetensors and/or pytorch_model.bin, with the tokenizer the test side trained, saved by
   this transformers' `save_pretrained` as the hub's files are;
2. reloads every written copy with `from_pretrained` and runs the cases on it:
   - logits: `model(input_ids, attention_mask, decoder_input_ids).logits`;
   - generate: `model.generate(input_ids, attention_mask, **options)` on token ids;
   - text: the seed pipeline, `tok.decode(model.generate(**tok(text, truncation=True, max_length=N),
     **options)[i], skip_special_tokens=True, clean_up_tokenization_spaces=False)`, plus the same
     decode with clean-up, so the tests can show which one arxsum matches;
   - tokenize: the tokenizer alone, `tok(text)`, `tok(text, truncation=True, max_length=N)`,
     `tok.decode(ids, skip_special_tokens=True)` and `len(tok)`.

Everything lands in OUT_DIR/results.pt (torch.save of plain lists, dicts and float32 tensors).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from lsg_converter.bart.modeling_lsg_bart import LSGBartConfig, LSGBartForConditionalGeneration
from transformers import AutoTokenizer, BartTokenizerFast
from transformers.utils import logging as hf_logging

WEIGHT_FORMATS = {"safetensors": True, "bin": False}  # -> save_pretrained(safe_serialization=...)


def make_decisive(model: LSGBartForConditionalGeneration, recipe: dict, seed: int, vocab: dict[str, int]) -> None:
    """Random BART weights give flat logits: near-ties that a one-ulp difference could flip.

    `init_std` (in the config) already makes the weights large; on top of that every LayerNorm,
    bias and the final logits bias get random values (so a dropped bias or norm shows), and the
    cross-attention queries are scaled up so the decoder depends sharply on the encoder output
    (different documents give different summaries). `eos_bias` makes EOS likely enough that some
    beams end on their own, so min_length and early stopping matter; `boost` favours named tokens.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    noise = recipe.get("noise", 0.1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + noise * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(noise * torch.randn(p.shape, generator=gen))
            elif name.endswith("fc2.weight") and recipe.get("center_fc2", True):
                # GELU's outputs have a positive mean, so a random fc2 adds the same large vector at
                # every position and step, and one token wins everywhere; zero-sum rows remove it.
                p.sub_(p.mean(dim=1, keepdim=True))
            elif name.endswith("encoder_attn.q_proj.weight"):
                p.mul_(recipe.get("cross_scale", 1.0))
            elif name.endswith(("encoder_attn.v_proj.weight", "encoder_attn.out_proj.weight")):
                p.mul_(recipe.get("cross_value_scale", 1.0))
        if recipe.get("equal_norm_embeddings", True):  # no token wins every step by its norm alone
            shared = model.model.shared.weight
            norm = shared.norm(dim=1, keepdim=True)
            shared.mul_(norm.mean() / norm.clamp_min(1e-6))  # (the pad row is zeros: it stays so)
        # A random decoder settles on one token and repeats it: large decoder positions make every
        # step's input differ, so summaries vary along their length.
        model.model.decoder.embed_positions.weight.mul_(recipe.get("decoder_position_scale", 1.0))
        bias = model.final_logits_bias
        bias.copy_(recipe.get("logits_bias", 0.5) * torch.randn(bias.shape, generator=gen))
        bias[0, model.config.eos_token_id] += recipe.get("eos_bias", 0.0)
        for token, boost in recipe.get("boost", {}).items():  # e.g. " ." and " ,": text clean-up would show
            bias[0, vocab[token]] += boost


def build_checkpoint(spec: dict, tokenizer_dir: Path, out: Path) -> dict[str, Path]:
    """Write the checkpoint once per weight format; returns {format: directory}."""
    torch.manual_seed(spec.get("seed", 0))
    # tiny models run on one thread: on a loaded 2-core machine two threads are 10x slower for them
    torch.set_num_threads(1 if spec["config"].get("d_model", 768) < 256 else default_threads)
    config = LSGBartConfig(**spec["config"])
    model = LSGBartForConditionalGeneration(config).eval()
    tokenizer = load_trained_tokenizer(tokenizer_dir, config.max_position_embeddings)
    make_decisive(model, spec.get("decisive", {}), spec.get("seed", 0), tokenizer.get_vocab())
    dirs = {}
    for fmt in spec.get("formats", ["safetensors"]):
        directory = out / spec["name"] / fmt
        model.save_pretrained(directory, safe_serialization=WEIGHT_FORMATS[fmt])
        tokenizer.save_pretrained(directory)
        drop_cleanup_flag(directory)
        dirs[fmt] = directory
    return dirs


def load_trained_tokenizer(directory: Path, max_length: int) -> BartTokenizerFast:
    """The test side's BPE from vocab.json + merges.txt (its tokenizer.json may be in a format this
    older `tokenizers` cannot read); save_pretrained then writes the files as this transformers does."""
    return BartTokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"),
                             model_max_length=max_length)


def drop_cleanup_flag(directory: Path) -> None:
    """The hub's tokenizer_config.json does not set clean_up_tokenization_spaces; neither do ours."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("clean_up_tokenization_spaces", None)
    path.write_text(json.dumps(config, indent=2))


def generation_kwargs(options: dict) -> dict:
    """GenerationOptions' fields -> generate() arguments, all stated (none left to config.json)."""
    return {"num_beams": options["num_beams"], "length_penalty": options["length_penalty"],
            "max_length": options["max_length"], "min_length": options["min_length"],
            "no_repeat_ngram_size": options["no_repeat_ngram_size"],
            "early_stopping": options["early_stopping"], "do_sample": False}


def as_tensor(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def run_logits(model, case: dict) -> dict[str, torch.Tensor]:
    """float32 logits; with `float64` set, also the same model's in float64 (exact math, no rounding
    noise: two correct implementations agree there to ~1e-12)."""
    def logits(m) -> torch.Tensor:
        return m(input_ids=as_tensor(case["input_ids"]), attention_mask=as_tensor(case["attention_mask"]),
                 decoder_input_ids=as_tensor(case["decoder_input_ids"])).logits.contiguous()

    out = {"float32": logits(model)}
    if case.get("float64"):
        out["float64"] = logits(double(model))
    return out


def double(model):
    """A float64 copy of the model, made once per model."""
    if not hasattr(model, "_float64_copy"):
        model._float64_copy = copy.deepcopy(model).double()
    return model._float64_copy


def run_generate(model, case: dict) -> list[list[int]]:
    ids = model.generate(input_ids=as_tensor(case["input_ids"]), attention_mask=as_tensor(case["attention_mask"]),
                         **generation_kwargs(case["options"]))
    return ids.tolist()


def run_text(model, tokenizer, case: dict) -> dict:
    """The seed pipeline, one call per batch as the tests make it (right padding, as tok() pads)."""
    enc = tokenizer(case["texts"], truncation=True, max_length=case["max_input_tokens"], padding=True,
                    return_tensors="pt")
    input_tokens = enc["attention_mask"].sum(dim=1).tolist()  # before: mask_first_token edits the mask in place
    ids = model.generate(**enc, **generation_kwargs(case["options"])).tolist()
    return {
        "ids": ids,
        "input_tokens": input_tokens,
        "text": [tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False) for row in ids],
        "text_cleaned": [tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=True)
                         for row in ids],
    }


default_threads = torch.get_num_threads()


def run_tokenize(tokenizer, case: dict) -> dict:
    """The seed pipeline's tokenizer on its own: ids, truncated ids, decoded text, and its size."""
    return {
        "ids": [tokenizer(t)["input_ids"] for t in case["texts"]],
        "truncated": {str(n): [tokenizer(t, truncation=True, max_length=n)["input_ids"] for t in case["texts"]]
                      for n in case["max_lengths"]},
        "decoded": [tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                    for ids in case["decode_ids"]],
        "size": len(tokenizer),
    }


def run_case(kind: str, model, tokenizer, case: dict):
    if kind == "tokenize":
        return run_tokenize(tokenizer, case)
    if kind == "logits":
        return run_logits(model, case)
    if kind == "generate":
        return run_generate(model, case)
    if kind == "text":
        return run_text(model, tokenizer, case)
    return run_decode(tokenizer, case)


def run_decode(tokenizer, case: dict) -> dict:
    return {"text": tokenizer.decode(case["ids"], skip_special_tokens=True, clean_up_tokenization_spaces=False),
            "text_cleaned": tokenizer.decode(case["ids"], skip_special_tokens=True, clean_up_tokenization_spaces=True)}


def main(spec_path: str, out_dir: str) -> None:
    hf_logging.set_verbosity_error()
    torch.set_grad_enabled(False)
    spec = json.loads(Path(spec_path).read_text())
    out = Path(out_dir)
    tokenizer_dir = Path(spec["tokenizer_dir"])
    results: dict = {"logits": {}, "generate": {}, "text": {}, "decode": {}, "tokenize": {}, "checkpoints": {},
                     "seconds": {}, "versions": versions()}
    for ckpt in spec["checkpoints"]:
        start = time.perf_counter()
        dirs = build_checkpoint(ckpt, tokenizer_dir, out)
        results["checkpoints"][ckpt["name"]] = {fmt: str(d) for fmt, d in dirs.items()}
        for fmt, directory in dirs.items():  # every written copy is read back and run
            model = LSGBartForConditionalGeneration.from_pretrained(directory).eval()
            tokenizer = AutoTokenizer.from_pretrained(directory)
            key = f"{ckpt['name']}/{fmt}"
            for kind in ("logits", "generate", "text", "decode", "tokenize"):
                for case in spec.get(kind, []):
                    if case["checkpoint"] == ckpt["name"] and fmt in case.get("formats", [fmt]):
                        results[kind][f"{key}/{case['name']}"] = run_case(kind, model, tokenizer, case)
            del model
        results["seconds"][ckpt["name"]] = time.perf_counter() - start
    torch.save(results, out / "results.pt")


def versions() -> dict:
    import lsg_converter
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "lsg_converter": getattr(lsg_converter, "__version__", "?")}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: driver.py SPEC.json OUT_DIR")
    main(sys.argv[1], sys.argv[2])
