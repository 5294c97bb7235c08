"""Bytes of a PDF, LaTeX or text file -> Document. Never imports the model."""

from __future__ import annotations

import io
import logging

from arxsum.document import Document
from arxsum.errors import InputError

PDF_MAGIC = b"%PDF-"


def detect_kind(data: bytes, name: str) -> str:
    """'pdf' when the bytes start like a PDF (or the name ends in .pdf), 'tex' for .tex, else 'text'."""
    if data.lstrip()[:5] == PDF_MAGIC or name.lower().endswith(".pdf"):
        return "pdf"
    if name.lower().endswith(".tex"):
        return "tex"
    return "text"


def extract(data: bytes, name: str, *, password: str | None = None, max_pages: int | None = None,
            keep_appendix: bool = False) -> Document:
    """Read one input's bytes into a Document; raise InputError with a one-line reason."""
    kind = detect_kind(data, name)
    if kind == "pdf":
        return _extract_pdf(data, name, password=password, max_pages=max_pages)
    text = decode_text(data, name)
    if not text.strip():
        raise InputError("empty input")
    return Document(source=name, kind=kind, body=text)


def decode_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start}); convert it with iconv first") from None


def _extract_pdf(data: bytes, name: str, *, password: str | None, max_pages: int | None) -> Document:
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if not data.lstrip().startswith(PDF_MAGIC):
        raise InputError("not a PDF (no %PDF- header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            if reader.decrypt(password or "") == 0:
                raise InputError("encrypted PDF: pass the password with --password")
        pages = reader.pages
        n = len(pages)
        if n == 0:
            raise InputError("PDF has zero pages")
        limit = n if max_pages is None else min(n, max_pages)
        text = "\n".join(pages[i].extract_text() or "" for i in range(limit))
    except FileNotDecryptedError:
        raise InputError("encrypted PDF: pass the password with --password") from None
    except DependencyError as e:
        raise InputError(f"cannot decrypt PDF: {e}") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"damaged or unreadable PDF ({type(e).__name__}: {e})") from None
    if not text.strip():
        raise InputError("no text layer: OCR it first")
    return Document(source=name, kind="pdf", body=text, pages=limit)
