"""arxsum: summarize arXiv papers into abstracts with LSG-BART."""

from arxsum.decoding import GenerationOptions
from arxsum.errors import ArxsumError
from arxsum.summarizer import DEFAULT_MODEL, Summarizer, Summary

__all__ = ["DEFAULT_MODEL", "ArxsumError", "GenerationOptions", "Summarizer", "Summary"]
__version__ = "0.1.0"
