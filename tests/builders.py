"""Checkpoints for tests and benchmarks, in the hub's file layout.

The real weights can never be downloaded here, so tests build their own: a byte-level BPE
tokenizer trained on a few KB of text (BART's special tokens and post-processor) and an LSG-BART
with random weights, written as config.json + model.safetensors or pytorch_model.bin under the
reference's key names (tied embeddings stored under every alias, as the hub's .bin does).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from arxsum.model import LSGBartConfig, LSGBartForConditionalGeneration

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in BART

CORPUS = """\
we study the dynamics of a driven quantum system coupled to a thermal bath . in this paper we show that
the steady state of the system is determined by the ratio of the driving frequency to the bath
temperature @xcite . the results are obtained with a perturbative expansion in the coupling @xmath0 and
confirmed by numerical simulations of the master equation @xmath1 .
the method is applied to a two - level system and to a harmonic oscillator , where exact solutions
are known @xcite . we find that the relaxation time scales as @xmath2 for weak coupling , while for
strong coupling a new regime appears in which the system locks to the drive .
neural networks trained with stochastic gradient descent generalize well even when they have many
more parameters than training examples . we propose a simple explanation based on the implicit bias
of the optimizer and test it on image classification benchmarks . our experiments show that the
norm of the weights grows slowly during training and that the margin increases monotonically .
in the second part of the paper we consider the problem of summarizing long scientific documents .
transformer models are limited by the quadratic cost of attention ; local and sparse attention
patterns reduce this cost and allow inputs of sixteen thousand tokens . we evaluate the approach on
the arxiv and pubmed datasets and report rouge scores that improve over previous work .
The abstract of a paper is a short summary of its contents. Figures, tables and references are not
part of the body. Equations such as E = mc^2 and citations like [12] or (Smith et al., 2019) appear in
the raw text extracted from PDF files. Well-known results are cited; new results are proven.
"""


def train_tokenizer(directory: Path, vocab_size: int = 512) -> Path:
    """A BART-style byte-level BPE tokenizer: tokenizer.json, vocab.json and merges.txt."""
    from tokenizers import ByteLevelBPETokenizer, processors

    directory.mkdir(parents=True, exist_ok=True)
    tok = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    tok.train_from_iterator([CORPUS] * 4, vocab_size=vocab_size, min_frequency=2,
                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                                 add_prefix_space=False)
    tok.save(str(directory / "tokenizer.json"))
    tok.save_model(str(directory))
    return directory


def tiny_config(vocab_size: int, **overrides) -> dict:
    """config.json for a tiny LSG-BART with the real model's LSG settings (block 16 instead of 256)."""
    config = {
        "model_type": "bart",
        "architectures": ["LSGBartForConditionalGeneration"],
        "vocab_size": vocab_size,
        "d_model": 32,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 512,
        "activation_function": "gelu",
        "scale_embedding": False,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_bos_token_id": 0,
        "forced_eos_token_id": 2,
        "block_size": 16,
        "num_global_tokens": 4,
        "adaptive": True,
        "pass_global_tokens_to_decoder": True,
        "pool_with_global": True,
        "mask_first_token": False,
        "sparsity_type": "none",
        "sparse_block_size": 0,
        "sparsity_factor": 2,
        "init_std": 0.3,
        # generation values a hub config may carry: arxsum must ignore them
        "num_beams": 4,
        "no_repeat_ngram_size": 3,
        "length_penalty": 1.0,
        "max_length": 1024,
    }
    config.update(overrides)
    return config


def real_architecture_config(vocab_size: int = 50265, **overrides) -> dict:
    """The published model's shape: 768 wide, 6 + 6 layers, block 256, 64 global tokens, 16384 positions."""
    real = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                max_position_embeddings=16384, block_size=256, num_global_tokens=64, init_std=0.02)
    return tiny_config(vocab_size, **{**real, **overrides})


def random_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the reference's key names, initialised as BART does (normal(0, init_std))."""
    model = LSGBartForConditionalGeneration(LSGBartConfig.from_dict(config))
    gen = torch.Generator().manual_seed(seed)
    std = config.get("init_std", 0.02)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("layer_norm.weight") or name.endswith("layernorm_embedding.weight"):
            value = torch.ones_like(tensor)
        elif name.endswith(".bias") or name == "final_logits_bias":
            value = torch.zeros_like(tensor)
        else:
            value = torch.randn(tensor.shape, generator=gen) * std
        state[name] = value
    return state


def write_checkpoint(directory: Path, config: dict, *, fmt: str = "safetensors", seed: int = 0,
                     tokenizer_from: Path | None = None) -> Path:
    """config.json + weights (+ tokenizer files copied from tokenizer_from) in the hub layout."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    state = random_state_dict(config, seed)
    shared = state["model.shared.weight"]
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    else:  # the hub's pytorch_model.bin stores the tied embedding under each alias
        state = dict(state, **{"model.encoder.embed_tokens.weight": shared,
                               "model.decoder.embed_tokens.weight": shared, "lm_head.weight": shared})
        torch.save(state, directory / "pytorch_model.bin")
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "vocab.json", "merges.txt"):
            (directory / name).write_bytes((tokenizer_from / name).read_bytes())
    return directory


def build_tiny_checkpoint(directory: Path, fmt: str = "safetensors", seed: int = 0, **overrides) -> Path:
    """A tiny LSG-BART with its tokenizer, ready for `Summarizer.from_pretrained(directory)`."""
    train_tokenizer(directory)
    vocab = len(json.loads((directory / "vocab.json").read_text()))
    return write_checkpoint(directory, tiny_config(vocab, **overrides), fmt=fmt, seed=seed)
