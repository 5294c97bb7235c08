"""Config and weights from a local directory in the hub's layout, or a hub id (whose download also
brings the tokenizer files that tokenizer.py reads).

Keys are mapped by hand and loudly: every missing or unexpected key is named in the error.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from arxsum.errors import ModelLoadError, describe
from arxsum.hub import HUB_PATTERNS, TOKENIZER_FILES, WEIGHT_FILES, resolve  # noqa: F401 (torch-free)
from arxsum.model import LSGBartConfig, LSGBartForConditionalGeneration

# Checkpoints store the shared embedding under any of these names (tied weights are saved once).
SHARED_ALIASES = ("model.shared.weight", "model.encoder.embed_tokens.weight",
                  "model.decoder.embed_tokens.weight", "lm_head.weight")
IGNORED_KEYS = ("model.encoder.version", "model.decoder.version")  # fairseq leftovers


def load_config(directory: Path) -> LSGBartConfig:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    try:
        return LSGBartConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{path}: {e}") from None


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The raw checkpoint tensors: model.safetensors if present, else pytorch_model.bin (weights only)."""
    safetensors_path, bin_path = directory / WEIGHT_FILES[0], directory / WEIGHT_FILES[1]
    try:
        if safetensors_path.is_file():
            from safetensors.torch import load_file

            return load_file(str(safetensors_path))
        if bin_path.is_file():
            try:
                return torch.load(bin_path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialization cannot be memory-mapped
                return torch.load(bin_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(f"cannot read the weights in {directory}: {describe(e)}") from None
    raise ModelLoadError(f"{directory} has neither {WEIGHT_FILES[0]} nor {WEIGHT_FILES[1]}")


def map_keys(raw: dict[str, torch.Tensor], model: LSGBartForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> our parameter names, with tied and prefix-less variants handled here only."""
    if not any(k.startswith("model.") for k in raw):  # a bare LSGBartModel checkpoint
        raw = {(k if k in ("final_logits_bias", "lm_head.weight") else f"model.{k}"): v for k, v in raw.items()}
    expected = model.state_dict().keys()
    mapped, unexpected = {}, []
    for key, tensor in raw.items():
        if key in IGNORED_KEYS:
            continue
        if key in SHARED_ALIASES and (key != "lm_head.weight" or model.lm_head is None):
            mapped.setdefault("model.shared.weight", tensor)
        elif key in expected:
            mapped[key] = tensor
        else:
            unexpected.append(key)
    if "final_logits_bias" not in mapped:  # optional in BART checkpoints (zeros)
        mapped["final_logits_bias"] = torch.zeros(1, model.config.vocab_size)
    missing = sorted(set(expected) - set(mapped))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(sorted(unexpected))}")
        raise ModelLoadError("checkpoint does not fit LSG-BART: " + "; ".join(parts))
    shapes = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(shapes[k].shape)})" for k, v in mapped.items()
             if tuple(v.shape) != tuple(shapes[k].shape)]
    if wrong:
        raise ModelLoadError("checkpoint shapes do not fit its config.json: " + ", ".join(wrong))
    return mapped


@contextmanager
def _without_init():
    """Build modules without random initialisation: every weight is replaced by the checkpoint's.
    (On the meta device, torch's init functions also import torch._dynamo: 1.7 s for nothing.)"""
    names = ("kaiming_uniform_", "uniform_", "normal_", "ones_", "zeros_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def load_model(directory: Path, device: torch.device, dtype: torch.dtype) -> LSGBartForConditionalGeneration:
    config = load_config(directory)
    with torch.device("meta"), _without_init():
        model = LSGBartForConditionalGeneration(config)
    state = map_keys(read_state_dict(directory), model)
    state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
