"""Helpers both bench sides use: bench.py (our venv) and ref_bench.py (the reference venv).

It imports neither arxsum nor transformers, so the reference side can load it as a sibling file.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a
    worker would inherit the bench process's own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def padded(inputs: list[list[int]], pad: int, torch):
    """Token id lists -> right-padded ids and attention mask (B, T), as a tokenizer pads a batch."""
    longest = max(len(row) for row in inputs)
    ids = torch.full((len(inputs), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(inputs), longest), dtype=torch.long)
    for i, row in enumerate(inputs):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def timed_tokenization(spec: dict, count_tokens) -> tuple[float | None, int | None]:
    """Tokenize the spec's text file once with `count_tokens(text) -> int`, timed: (seconds, tokens),
    or (None, None) when the row has no text."""
    if not spec.get("text"):
        return None, None
    text = Path(spec["text"]).read_text(encoding="utf-8")
    start = time.perf_counter()
    tokens = count_tokens(text)
    return time.perf_counter() - start, tokens
