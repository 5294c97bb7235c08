"""The settings every command shares, in a module that imports nothing heavy.

`GenerationOptions` and `DEFAULT_MODEL` are read by `--help`, `arxsum eval --predictions` and the
runner before any model is needed, so they live here and not beside the beam search (which imports
torch): `arxsum --help` and `arxsum extract` start without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "ccdv/lsg-bart-base-16384-arxiv"
DEFAULT_TIMEOUT_S = 120.0  # per-file extraction limit
DEFAULT_MAX_PAGES = 100  # 16384 tokens are ~25 pages of text; more pages only cost time (2000-page PDFs)


@dataclass(frozen=True)
class GenerationOptions:
    """How summaries are generated. Defaults are the model card's; the one source of truth for them.

    Lengths count decoder tokens as transformers 4.x does: the decoder start token included.
    """

    num_beams: int = 5
    length_penalty: float = 2.0
    max_length: int = 320
    min_length: int = 32
    no_repeat_ngram_size: int = 0
    early_stopping: bool = True

    def __post_init__(self) -> None:
        from arxsum.errors import OptionsError

        if self.num_beams < 1:
            raise OptionsError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.max_length < 2:
            raise OptionsError(f"max_length must be at least 2, got {self.max_length}")
        if self.min_length < 0:
            raise OptionsError(f"min_length must be 0 or more, got {self.min_length}")
        if self.no_repeat_ngram_size < 0:
            raise OptionsError(f"no_repeat_ngram_size must be 0 or more, got {self.no_repeat_ngram_size}")
        if self.length_penalty != self.length_penalty:  # NaN
            raise OptionsError("length_penalty must be a number")
