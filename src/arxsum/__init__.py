"""arxsum: summarize arXiv papers into abstracts with LSG-BART.

The model side (torch, transformers) is imported on first use only, so the CLI's extraction
workers and `arxsum extract` start without it.
"""

from arxsum.errors import ArxsumError

__version__ = "0.1.0"
__all__ = ["DEFAULT_MODEL", "ArxsumError", "GenerationOptions", "Summarizer", "Summary"]

_LAZY = {"GenerationOptions": "arxsum.options", "Summarizer": "arxsum.summarizer",
         "Summary": "arxsum.summarizer", "DEFAULT_MODEL": "arxsum.options"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'arxsum' has no attribute {name!r}")
