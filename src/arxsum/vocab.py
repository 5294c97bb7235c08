"""The model vocabulary's whole words, read from its tokenizer files without the model or torch.

Extraction uses them, when a tokenizer is at hand, as a last resort for a line-end hyphen that the
paper's own words do not decide (`paper.keep_hyphen`): a joined form that is one token of the
byte-level BPE vocabulary ("Ġunlike") is a word.
"""

from __future__ import annotations

import json
from pathlib import Path

WORD_START = "\u0120"  # "Ġ": byte-level BPE's mark for a token that starts a word


def model_words(model_dir: str | Path) -> frozenset[str] | None:
    """Lowercase alphabetic whole-word tokens of `tokenizer.json` (or `vocab.json`) in `model_dir`;
    None when neither can be read."""
    folder = Path(model_dir)
    for name, key in (("tokenizer.json", ("model", "vocab")), ("vocab.json", ())):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            for k in key:
                data = data[k]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(data, dict):
            return frozenset(tok[1:] for tok in data if isinstance(tok, str) and tok.startswith(WORD_START)
                             and tok[1:].isalpha() and tok[1:].islower())
    return None
