"""Where a model's files are: a local directory in the hub's layout, or a hub id (from the standard
cache, else downloaded into it). No torch here: `arxsum extract --format json` finds the tokenizer
with it and starts without the model stack.
"""

from __future__ import annotations

import logging
from pathlib import Path

from arxsum.errors import ModelLoadError, describe

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")
HUB_PATTERNS = ["config.json", *WEIGHT_FILES, *TOKENIZER_FILES, "generation_config.json"]


def resolve(name_or_path: str) -> Path:
    """A local directory as is; otherwise a hub id, from the standard cache or downloaded into it."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{name_or_path} is a file; --model takes a directory with config.json and weights")
    # A hub id is "name" or "owner/name"; anything else that does not exist is a mistyped path.
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
    if looks_like_path or not name_or_path.strip():
        raise ModelLoadError(f"model directory not found: {name_or_path}")
    return _from_hub(name_or_path)


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    hint = ("pass a local directory in the hub's layout (config.json, pytorch_model.bin or "
            "model.safetensors, tokenizer.json) with --model DIR or ARXSUM_MODEL=DIR")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, etag_timeout=10))
    except Exception as e:
        raise ModelLoadError(f"cannot get model {repo_id!r}: {describe(e)}, and it is not in the cache; "
                             f"{hint}") from None
