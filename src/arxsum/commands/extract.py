"""`arxsum extract PAPER...`: print the text the model would see, or the paper's parts as JSON.

Thin: read each input, call `arxsum.extract.extract` and `arxsum.normalize.to_model_text`, print.
The main CLI calls `register(app)`.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from arxsum.document import Document
from arxsum.errors import ArxsumError, describe

HELP = (
    "Print the text the model would see for each PAPER (PDF, LaTeX .tex, or text; - for stdin).\n\n"
    "For PDFs and LaTeX that is the body, from the first section after the abstract up to the "
    "references, without headings, captions, footnotes, running headers and page numbers, normalised "
    "to the model's training text: lowercase, spaces around punctuation, math as @xmathN, citations as "
    "@xcite, no URLs or e-mail addresses.\n\n"
    "--raw prints the body before normalisation (plain text files unchanged). --format json prints one "
    "object a paper: title, abstract, sections, body, math, pages, characters, tokens, dropped."
)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


def extract_command(
    papers: Annotated[list[str], typer.Argument(help="PDF, .tex or text files; - reads stdin.",
                                                metavar="PAPER...")],
    raw: Annotated[bool, typer.Option("--raw", help="The body before normalisation.")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text or json.")] = OutputFormat.text,
    keep_appendix: Annotated[bool, typer.Option("--keep-appendix",
                                                help="Keep appendices that follow the references.")] = False,
    password: Annotated[str | None, typer.Option(help="Password of encrypted PDFs.")] = None,
    max_pages: Annotated[int | None, typer.Option(min=1, help="Read at most this many PDF pages.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show pypdf's warnings.")] = False,
    model: Annotated[str | None, typer.Option(
        envvar="ARXSUM_MODEL", show_default=False,
        help="Hub id or local folder of the model whose tokenizer counts the tokens (--format json); "
             "default: the summarizer's model.")] = None,
) -> None:
    counter = TokenCounter(model) if output_format is OutputFormat.json else None
    words = model_words_at_hand(model)  # as the summarizing run decides line-end hyphens
    failed = 0
    for paper in papers:
        try:
            doc = read_paper(paper, keep_appendix=keep_appendix, password=password, max_pages=max_pages,
                             verbose=verbose, words=words)
        except ArxsumError as e:
            typer.echo(f"{paper}: {e}", err=True)
            failed += 1
            continue
        for warning in doc.warnings:
            typer.echo(f"{paper}: {warning}", err=True)
        text, math = model_input(doc, raw)
        if counter is None:
            typer.echo(text)
        else:
            typer.echo(json.dumps(parts_json(doc, text, math, raw, counter), ensure_ascii=False))
    if failed:
        raise typer.Exit(1)


def model_words_at_hand(model: str | None) -> frozenset[str] | None:
    """The model vocabulary's whole words when its folder is on this machine (a path, or a hub id in
    the cache: never downloaded), as a summarizing run gives them to extraction; else None."""
    from arxsum.options import DEFAULT_MODEL
    from arxsum.runner import local_model_dir
    from arxsum.vocab import model_words

    folder = local_model_dir(model or DEFAULT_MODEL)
    return model_words(folder) if folder is not None else None


def read_paper(paper: str, **options) -> Document:
    """One PAPER argument's bytes (a path, or stdin for "-") through extraction."""
    from arxsum.extract import extract
    from arxsum.sources import Source, read_bytes

    if paper == "-":
        data = sys.stdin.buffer.read()
    elif Path(paper).is_dir():  # a LaTeX project's folder: its main file with the includes in place
        from arxsum.project import read_latex_input

        return read_latex_input(None, paper, path=Path(paper), keep_appendix=options.get("keep_appendix", False),
                                verbose=options.get("verbose", False))
    else:
        data = read_bytes(Source(name=paper, kind="file", path=Path(paper)))
    return extract(data, paper, **options)


def model_input(doc: Document, raw: bool) -> tuple[str, list[str]]:
    """The model's input text and the math list, or the body verbatim with --raw."""
    if raw:
        return doc.body, []
    from arxsum.normalize import to_model_text

    mt = to_model_text(doc)
    return mt.text, mt.math


def parts_json(doc: Document, text: str, math: list[str], raw: bool, counter: TokenCounter) -> dict:
    return {
        "source": doc.source,
        "kind": doc.kind,
        "title": doc.title,
        "abstract": doc.abstract,
        "sections": doc.sections,
        "body": text,
        "raw": raw,
        "math": math,
        "pages": doc.pages,
        "characters": len(text),
        "tokens": counter.count(text),
        "dropped": doc.dropped,
        "warnings": doc.warnings,
    }


class TokenCounter:
    """Counts tokens with the model's tokenizer; null counts (and one note) when it cannot be loaded."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        self._tokenizer = None
        self._failed = False

    def count(self, text: str) -> int | None:
        tokenizer = self._load()
        if tokenizer is None:
            return None
        return len(tokenizer.encode(text))

    def _load(self):
        if self._tokenizer is None and not self._failed:
            try:
                from arxsum.hub import resolve
                from arxsum.tokenizer import load_tokenizer

                if self.model is None:
                    from arxsum.options import DEFAULT_MODEL  # its one source of truth

                    self.model = DEFAULT_MODEL
                self._tokenizer = load_tokenizer(resolve(self.model))
            except Exception as e:  # noqa: BLE001 - any failure only costs the token counts
                self._failed = True
                reason = str(e).splitlines()[0] if isinstance(e, ArxsumError) and str(e) else describe(e)
                typer.echo(f"tokens not counted: cannot load the tokenizer of {self.model} ({reason})",
                           err=True)
        return self._tokenizer


def register(app: typer.Typer) -> None:
    from arxsum.commands.edge import PanelCommand

    app.command("extract", help=HELP, cls=PanelCommand, short_help="Print the text the model reads.")(extract_command)
