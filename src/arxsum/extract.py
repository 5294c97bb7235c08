"""Bytes of a PDF, LaTeX or text file -> Document. Never imports the model."""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from collections import Counter
from collections.abc import Callable

from arxsum.archive import is_archive
from arxsum.document import Document
from arxsum.errors import InputError, describe
from arxsum.fontenc import install_tex_maps
from arxsum.paper import split_paper
from arxsum.pdftext import FormTracker, read_lines
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
            keep_appendix: bool = False, verbose: bool = False, words: frozenset[str] | None = None,
            body_tokens: Callable[[str], int] | None = None, token_limit: int | None = None) -> Document:
    """Read one input's bytes into a Document; raise InputError with a one-line reason.

    `words`, the model vocabulary's whole words (`vocab.model_words`), help decide line-end
    hyphens in PDFs where the paper's own words do not. With `body_tokens` (a body's length in the
    model's tokens) and `token_limit`, a PDF's pages are read only until its body is past the limit,
    and MARGIN_PAGES more (see `read_as_needed`).

    PDFs and LaTeX sources are split into their parts and `body` holds the sections between the
    abstract and the references; plain text is kept verbatim as the body.
    """
    quiet_pypdf(verbose)
    kind = detect_kind(data, name)
    if kind == "pdf":
        return _extract_pdf(data, name, password=password, max_pages=max_pages, keep_appendix=keep_appendix,
                            verbose=verbose, words=words, body_tokens=body_tokens, token_limit=token_limit)
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
                 keep_appendix: bool, verbose: bool, words: frozenset[str] | None = None,
                 body_tokens: Callable[[str], int] | None = None, token_limit: int | None = None) -> Document:
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
            if body_tokens is None or token_limit is None or limit <= MARGIN_PAGES + token_limit / DENSE_PAGE_TOKENS:
                lines, fragments_dropped, unreadable = read_lines(reader, limit)
                read = limit
            else:
                def body_of(lines: list) -> str:
                    return split_paper(lines, float(reader.pages[0].mediabox.top), keep_appendix=keep_appendix,
                                       words=words).body

                lines, fragments_dropped, unreadable, read = read_as_needed(reader, limit, body_of, body_tokens,
                                                                            token_limit)
    except FileNotDecryptedError:
        raise InputError("encrypted PDF: pass the password with --password") from None
    except DependencyError as e:
        raise InputError(f"cannot decrypt PDF: {e}") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise InputError(f"damaged or unreadable PDF ({describe(e)})") from None
    if unreadable == read:
        raise InputError("damaged or unreadable PDF (no page could be read)")
    if not any(ln.text.strip() for ln in lines):
        raise InputError("no text layer: OCR it first")
    parts = split_paper(lines, float(reader.pages[0].mediabox.top), keep_appendix=keep_appendix, words=words)
    parts.dropped.update(fragments_dropped)
    if read < limit:
        parts.dropped[PAGES_PAST_LIMIT] += limit - read
    notes = [f"{unreadable} damaged page(s) skipped"] if unreadable else []
    if importlib.util.find_spec("fontTools") is None:
        notes.append("fontTools is not installed: pypdf may misread the text of Type1 (CFF) fonts")
    if not parts.body.strip():
        notes.append("no body found between the abstract and the references; using all the text")
        parts.body = "\n".join(ln.text for ln in lines if not ln.furniture)
    return Document(source=name, kind="pdf", body=parts.body, title=parts.title, abstract=parts.abstract,
                    sections=parts.sections, pages=read, dropped=dict(parts.dropped), warnings=notes)


# Pages read past the one where the body passed the model's limit. Some steps weigh evidence from
# every page read (running headers by repetition, line-end hyphens by the paper's word counts, the
# right column's start), so the model's input is the same as with every page read only if what
# follows the cut changes none of their decisions about the text before it: a guess, measured. On
# the sample papers, cut at every 750 tokens of the tests' tokenizer, 3 or 4 pages changed a hyphen
# of sysid-neural-structures ("back-" at a line end of page 2, written "back-propagation" first on
# page 7 and cut at page 2 or 3); 5 pages kept every input identical (tests/test_page_cut.py).
MARGIN_PAGES = 5
PAGES_PAST_LIMIT = "pages past the model's input (not read)"
# The body is measured once the text of the pages read is this many times the limit, in tokens: the
# body is most of a paper's text, not all (title block, captions, small print, references). Later
# only costs pages read, never a different input; sooner costs a measurement that finds too little.
MEASURE_AT = 1.25
# Reading as needed costs ~20% more on a paper it does not cut (the recording and replay below; 66%
# on directed-info-gail, whose figures are thousands of form drawings): a paper of so few pages that
# even pages this dense (~1500 tokens of the model's tokenizer fill a two-column page; the tests' tiny
# one makes ~2100) could not pass the limit before the margin is read the plain way. A wrong figure
# only costs time: the input is the same either way.
DENSE_PAGE_TOKENS = 2000


def read_as_needed(reader, limit: int, body_of: Callable[[list], str], body_tokens: Callable[[str], int],
                   token_limit: int) -> tuple[list, Counter, int, int]:
    """`pdftext.read_lines` of as many pages as the model needs: until the body of the pages read is
    past `token_limit` tokens, then MARGIN_PAGES more, at most `limit` in all. Returns read_lines'
    (lines, dropped, unreadable) and the number of pages read.

    Each page's content stream is parsed once (`RecordedPage`); finding the paper's parts again to
    measure the body costs ~0.1 s on a 15-page paper, as much as reading 2-4 pages, so it is done only
    once the text of the pages read, in tokens, is MEASURE_AT times the limit and a cut could still
    save a page, and again only after that text has grown in proportion to what the body still
    lacked."""
    pages = RecordedPages(reader)
    rough = getattr(body_tokens, "rough", body_tokens)  # a page's raw text, in tokens (no normalising)
    read_text = 0  # tokens of all the text read: more than the body
    measure_at = MEASURE_AT * token_limit
    for i in range(limit):
        read_text += rough(raw_text(pages[i]))
        if read_text < measure_at or i + 1 + MARGIN_PAGES >= limit:
            continue  # the body cannot be past the limit yet, or a cut would save no page
        body = body_tokens(body_of(read_lines(pages, i + 1)[0]))
        if body > token_limit:
            stop = min(limit, i + 1 + MARGIN_PAGES)
            return (*read_lines(pages, stop), stop)
        # the body grows with the text read, from where it starts (hardly any body yet: the text doubles)
        growth = token_limit / body if body > token_limit / 16 else 2.0
        measure_at = max(read_text + 1, read_text * growth)
    return (*read_lines(pages, limit), limit)


def raw_text(page: RecordedPage) -> str:
    """The page's text as pypdf reads it, but for the text of included graphics (`FormTracker`), from
    the one parse that `pdftext.page_fragments` replays later (the TeX fonts' maps installed first, as
    it does); "" for a damaged page."""
    pieces: list[str] = []
    forms = FormTracker()

    def visit(text, *args) -> None:
        if forms.current is None:
            pieces.append(text)

    try:
        install_tex_maps(page)
        page.extract_text(visitor_text=visit, visitor_operand_before=forms.before, visitor_operand_after=forms.after)
    except Exception:  # noqa: BLE001 - a damaged page: read_lines skips it
        return ""
    return " ".join(pieces)


class RecordedPages:
    """A pypdf reader's pages for `read_lines`, each page's text extraction run once (`RecordedPage`)."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.cache: dict[int, RecordedPage] = {}

    @property
    def pages(self) -> RecordedPages:
        return self

    def __len__(self) -> int:
        return len(self.reader.pages)

    def __getitem__(self, i: int) -> RecordedPage:
        if i not in self.cache:
            self.cache[i] = RecordedPage(self.reader.pages[i])
        return self.cache[i]


class RecordedPage:
    """A pypdf page whose `extract_text` parses the content stream once and records the visitor calls
    it makes; later calls replay them (or raise what the first one raised). Everything else is the
    page's own, so `pdftext` reads it as it reads the page."""

    def __init__(self, page) -> None:
        self._page = page
        self._calls: list | None = None
        self._how: tuple = ()  # the arguments besides the visitors it was recorded with
        self._result = ""
        self._error: BaseException | None = None

    def __getattr__(self, name: str):
        return getattr(self._page, name)

    def __getitem__(self, key):
        return self._page[key]

    def __contains__(self, key) -> bool:
        return key in self._page

    def extract_text(self, *args, visitor_text=None, visitor_operand_before=None, visitor_operand_after=None,
                     **kwargs):
        visitors = (visitor_text, visitor_operand_before, visitor_operand_after)
        if self._calls is None or self._how != (args, kwargs):  # asked another way: parse again
            return self._record(args, kwargs, visitors)
        for kind, call_args in self._calls:
            if visitors[kind] is not None:
                visitors[kind](*call_args)
        if self._error is not None:
            raise self._error
        return self._result

    def _record(self, args, kwargs, visitors):
        calls: list = []
        self._how, self._error = (args, kwargs), None

        text_visitor, before, after = visitors
        record = calls.append

        # pypdf changes its matrices in place: the calls keep copies (cm, tm)
        def text(t, cm, tm, font, size):
            record((0, (t, cm[:], tm[:], font, size)))
            if text_visitor is not None:
                text_visitor(t, cm, tm, font, size)

        def operand_before(operator, operands, cm, tm):
            record((1, (operator, operands, cm[:], tm[:])))
            if before is not None:
                before(operator, operands, cm, tm)

        def operand_after(operator, operands, cm, tm):
            record((2, (operator, operands, cm[:], tm[:])))
            if after is not None:
                after(operator, operands, cm, tm)

        try:
            self._result = self._page.extract_text(*args, visitor_text=text, visitor_operand_before=operand_before,
                                                   visitor_operand_after=operand_after, **kwargs)
        except Exception as e:
            self._error = e
            raise
        finally:
            self._calls = calls
        return self._result


def _open_pdf(pypdf, data: bytes):
    """A reader in pypdf's non-strict mode, which recovers what it can of a damaged file."""
    return pypdf.PdfReader(io.BytesIO(data), strict=False)
