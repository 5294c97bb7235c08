"""Bytes of a PDF, LaTeX or text file -> Document. Never imports the model."""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings

from arxsum.archive import is_archive
from arxsum.document import Document
from arxsum.errors import InputError, describe
from arxsum.paper import split_paper
from arxsum.pdftext import read_lines
from arxsum.project import read_latex_input

PDF_MAGIC = b"%PDF-"


def detect_kind(data: bytes, name: str) -> str:
    """'pdf' when the bytes start like a PDF (or the name ends in .pdf), 'tex' for .tex, else 'text'."""
    if data.lstrip()[:5] == PDF_MAGIC or name.lower().endswith(".pdf"):
        return "pdf"
    if name.lower().endswith(".tex"):
        return "tex"
    return "text"


def extract(data: bytes, name: str, *, password: str | None = None, max_pages: int | None = None,
            keep_appendix: bool = False, verbose: bool = False, words: frozenset[str] | None = None) -> Document:
    """Read one input's bytes into a Document; raise InputError with a one-line reason.

    `words`, the model vocabulary's whole words (`vocab.model_words`), help decide line-end
    hyphens in PDFs where the paper's own words do not.

    PDFs and LaTeX sources are split into their parts and `body` holds the sections between the
    abstract and the references; plain text is kept verbatim as the body.
    """
    quiet_pypdf(verbose)
    kind = detect_kind(data, name)
    if kind == "pdf":
        return _extract_pdf(data, name, password=password, max_pages=max_pages,
                            keep_appendix=keep_appendix, verbose=verbose, words=words)
    if kind == "tex" or is_archive(data, name):  # a LaTeX project: its includes, an e-print archive
        return read_latex_input(data, name, keep_appendix=keep_appendix, verbose=verbose)
    text = decode_text(data, name)
    if not text.strip():
        raise InputError("empty input")
    return Document(source=name, kind=kind, body=text)


def quiet_pypdf(verbose: bool) -> None:
    """pypdf logs every oddity of a PDF (warnings about fonts, XObjects); show them only if asked."""
    logging.getLogger("pypdf").setLevel(logging.WARNING if verbose else logging.CRITICAL)


def decode_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}); convert it with iconv first") from None


def _extract_pdf(data: bytes, name: str, *, password: str | None, max_pages: int | None,
                 keep_appendix: bool, verbose: bool, words: frozenset[str] | None = None) -> Document:
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    if not data.lstrip().startswith(PDF_MAGIC):
        raise InputError("not a PDF (no %PDF- header)")
    try:
        reader = _open_pdf(pypdf, data)
        if reader.is_encrypted:
            if reader.decrypt(password or "") == 0:
                raise InputError("encrypted PDF: pass the password with --password")
        pages = reader.pages
        n = len(pages)
        if n == 0:
            raise InputError("PDF has zero pages")
        limit = n if max_pages is None else min(n, max_pages)
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")  # pypdf's PdfReadWarning and friends
            lines, fragments_dropped, unreadable = read_lines(reader, limit)
    except FileNotDecryptedError:
        raise InputError("encrypted PDF: pass the password with --password") from None
    except DependencyError as e:
        raise InputError(f"cannot decrypt PDF: {e}") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise InputError(f"damaged or unreadable PDF ({describe(e)})") from None
    if unreadable == limit:
        raise InputError("damaged or unreadable PDF (no page could be read)")
    if not any(ln.text.strip() for ln in lines):
        raise InputError("no text layer: OCR it first")
    parts = split_paper(lines, float(reader.pages[0].mediabox.top), keep_appendix=keep_appendix, words=words)
    parts.dropped.update(fragments_dropped)
    notes = [f"{unreadable} damaged page(s) skipped"] if unreadable else []
    if importlib.util.find_spec("fontTools") is None:
        notes.append("fontTools is not installed: pypdf may misread the text of Type1 (CFF) fonts")
    if not parts.body.strip():
        notes.append("no body found between the abstract and the references; using all the text")
        parts.body = "\n".join(ln.text for ln in lines if not ln.furniture)
    return Document(source=name, kind="pdf", body=parts.body, title=parts.title, abstract=parts.abstract,
                    sections=parts.sections, pages=limit, dropped=dict(parts.dropped), warnings=notes)


def _open_pdf(pypdf, data: bytes):
    """A reader in pypdf's non-strict mode, which recovers what it can of a damaged file."""
    return pypdf.PdfReader(io.BytesIO(data), strict=False)
