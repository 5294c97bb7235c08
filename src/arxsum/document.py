"""What an input becomes once read: the paper's parts, and the text the model will see."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Document:
    """A paper after extraction, before tokenization.

    `body` is the text meant for the model (for PDFs and LaTeX: the sections between the abstract
    and the references, paragraphs separated by blank lines, without headings, captions and
    footnotes), not yet normalised to the training text: math is marked `$...$` / `$$...$$`
    (LaTeX math, and glyphs of math fonts in PDFs) and LaTeX citations stay `\\cite{...}`, which
    `normalize.to_model_text` turns into `@xmathN` and `@xcite`. For plain-text inputs it is the
    file's text, verbatim.
    """

    source: str  # the path, "-" for stdin, or the arXiv id, as the user named it
    kind: str  # "pdf", "tex" or "text"
    body: str
    title: str | None = None
    abstract: str | None = None  # the paper's own abstract
    sections: list[str] = field(default_factory=list)  # section headings, in order
    pages: int | None = None  # PDF pages read
    dropped: dict[str, int] = field(default_factory=dict)  # what extraction removed: part -> count
    warnings: list[str] = field(default_factory=list)  # one-line notes for stderr


@dataclass
class ModelText:
    """The text handed to the tokenizer, with what is needed to turn the summary back into prose."""

    text: str
    math: list[str] = field(default_factory=list)  # math[i] is what @xmath<i> replaced
    cased: dict[str, str] = field(default_factory=dict)  # "gail" -> "GAIL": how the paper writes it
