"""Summarizer: the Python API that ties loading, tokenizing and decoding together.

CONTRACT (in progress): signatures below are stable; bodies are being written.
"""

from __future__ import annotations

from dataclasses import dataclass

from arxsum.decoding import GenerationOptions

DEFAULT_MODEL = "ccdv/lsg-bart-base-16384-arxiv"


@dataclass
class Summary:
    text: str  # the decoded summary, exactly as the tokenizer decodes it (no clean-up)
    token_ids: list[int]  # generated ids as generate() returns them (decoder start token first)
    input_tokens: int  # tokens fed to the encoder, after truncation (specials included)
    original_tokens: int  # tokens before truncation
    truncated: bool


class Summarizer:
    """Load once, summarize many. `.model` is the nn.Module, `.tokenizer` a transformers fast tokenizer."""

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_MODEL, *, device: str = "auto",
                        dtype: str = "auto") -> Summarizer:
        raise NotImplementedError

    @property
    def max_positions(self) -> int:
        """The most input tokens the model can take (16384 for the default model)."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def summarize_batch(self, texts: list[str], options: GenerationOptions = GenerationOptions(),
                        max_input_tokens: int | None = None) -> list[Summary]:
        """Summarize several texts in one padded batch; results in input order."""
        raise NotImplementedError

    def summarize(self, texts: str | list[str], **options) -> list[str]:
        """Convenience: options are GenerationOptions fields plus max_input_tokens and batch_size."""
        raise NotImplementedError
