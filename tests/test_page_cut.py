"""Reading a PDF only as far as the model reads it (issue 19): the pages after the body passes the
model's token limit are not extracted, and the token ids the model is fed are the same as with every
page read. The tests' tiny tokenizer (a few hundred tokens) makes the cut come early in real papers."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pypdf
import pytest

from arxsum.extract import MARGIN_PAGES, PAGES_PAST_LIMIT, RecordedPages, extract, read_as_needed
from arxsum.normalize import to_model_text
from arxsum.pdftext import read_lines
from arxsum.sources import BodyTokens, ExtractOptions, Extractor, Source
from arxsum.tokenizer import load_tokenizer

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "papers"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/samples/papers")
SAMPLE_PDFS = sorted(SAMPLES.glob("*.pdf"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(Path(tiny_model_dir))


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory):
    from pdf_factory import long_paper

    path = tmp_path_factory.mktemp("long") / "long.pdf"
    long_paper(path, pages=40)
    return path


def model_ids(doc, tokenizer, limit: int) -> list[int]:
    """What the runner feeds the model: the training text, truncated by the tokenizer."""
    return tokenizer.encode(to_model_text(doc).text, max_length=limit)


def test_recorded_pages_read_as_the_pages_do():
    """Replayed text extraction gives read_lines' lines exactly, the second time too."""
    for pdf in SAMPLE_PDFS:
        reader = pypdf.PdfReader(io.BytesIO(pdf.read_bytes()), strict=False)
        n = len(reader.pages)
        want = read_lines(reader, n)
        recorded = RecordedPages(pypdf.PdfReader(io.BytesIO(pdf.read_bytes()), strict=False))
        for _ in range(2):
            lines, dropped, unreadable = read_lines(recorded, n)
            assert [(ln.page, ln.text, ln.furniture, ln.column) for ln in lines] == \
                   [(ln.page, ln.text, ln.furniture, ln.column) for ln in want[0]]
            assert (dropped, unreadable) == want[1:]


def test_reading_as_needed_without_a_cut_reads_as_read_lines(tmp_path, tokenizer):
    """The estimate's own pass over each page (TeX fonts' maps, forms) leaves what read_lines reads
    the same, on the generated papers (TeX-encoded fonts, figures) and the samples."""
    from pdf_factory import build_all

    pdfs = [spec.path for spec in build_all(tmp_path).values()] + SAMPLE_PDFS
    counter = BodyTokens(tokenizer, normalize=True)
    for pdf in pdfs:
        def reader(pdf=pdf):
            return pypdf.PdfReader(io.BytesIO(pdf.read_bytes()), strict=False)

        n = len(reader().pages)
        want = read_lines(reader(), n)
        got = read_as_needed(reader(), n, lambda lines: "", counter, 10**9)
        assert got[3] == n, pdf.name
        assert [(ln.page, ln.text, ln.furniture) for ln in got[0]] == [(ln.page, ln.text, ln.furniture) for ln in want[0]]
        assert got[1:3] == want[1:], pdf.name


@pytest.mark.skipif(not SAMPLE_PDFS, reason="no sample papers")
@pytest.mark.parametrize("pdf", SAMPLE_PDFS, ids=lambda p: p.stem)
def test_model_input_is_the_same_as_with_every_page_read(pdf, tokenizer):
    data = pdf.read_bytes()
    full = extract(data, pdf.name)
    tokens = len(tokenizer.encode(to_model_text(full).text))
    counter = BodyTokens(tokenizer, normalize=True)
    fewer = 0
    for limit in (64, 1000, 1750, 2500, tokens // 2, tokens - 100, tokens + 100):
        cut = extract(data, pdf.name, body_tokens=counter, token_limit=limit)
        assert model_ids(cut, tokenizer, limit) == model_ids(full, tokenizer, limit), limit
        assert (cut.title, cut.abstract) == (full.title, full.abstract)
        assert cut.pages + cut.dropped.get(PAGES_PAST_LIMIT, 0) == full.pages
        fewer += cut.pages < full.pages
        if limit > tokens:  # the whole body fits: every page is read, the references cut the same
            assert cut.pages == full.pages and cut.body == full.body and cut.sections == full.sections
    assert fewer >= 1  # the cut did happen (7 pages: only where the body passes the limit on page 1)


def test_a_long_paper_is_read_only_as_far_as_the_model_reads(long_pdf, tokenizer):
    data = long_pdf.read_bytes()
    counter = BodyTokens(tokenizer, normalize=True)
    started = time.perf_counter()
    full = extract(data, long_pdf.name)
    full_s = time.perf_counter() - started
    assert full.pages == 41
    for limit in (2000, 16384):
        started = time.perf_counter()
        cut = extract(data, long_pdf.name, body_tokens=counter, token_limit=limit)
        cut_s = time.perf_counter() - started
        assert model_ids(cut, tokenizer, limit) == model_ids(full, tokenizer, limit)
        assert (cut.title, cut.abstract) == (full.title, full.abstract)
        assert cut.pages < 41 and cut.dropped[PAGES_PAST_LIMIT] == 41 - cut.pages
        # the body passed the limit within the pages read before the margin
        before = extract(data, long_pdf.name, max_pages=cut.pages - MARGIN_PAGES)
        assert len(tokenizer.encode(to_model_text(before).text)) > limit
        print(f"limit {limit}: {cut.pages}/41 pages, {cut_s:.2f} s against {full_s:.2f} s")


def test_max_pages_still_caps_and_no_tokenizer_reads_every_page(long_pdf, tokenizer):
    data = long_pdf.read_bytes()
    counter = BodyTokens(tokenizer, normalize=True)
    assert extract(data, "x.pdf", max_pages=3, body_tokens=counter, token_limit=10**6).pages == 3
    assert extract(data, "x.pdf", max_pages=3, body_tokens=counter, token_limit=100).pages == 3
    assert extract(data, "x.pdf", token_limit=100).pages == 41  # nothing counts tokens: no cut


def test_raw_counts_the_body_itself(long_pdf, tokenizer):
    data = long_pdf.read_bytes()
    full = extract(data, "x.pdf")
    cut = extract(data, "x.pdf", body_tokens=BodyTokens(tokenizer, normalize=False), token_limit=3000)
    assert cut.pages < full.pages
    assert tokenizer.encode(cut.body, max_length=3000) == tokenizer.encode(full.body, max_length=3000)


def test_extraction_workers_cut_with_the_checkpoints_tokenizer(long_pdf, tiny_model_dir):
    options = ExtractOptions(tokenizer_dir=str(tiny_model_dir), token_limit=2000)
    with Extractor(options, timeout=60, workers=1) as extractor:
        paper = extractor.submit(Source(name=str(long_pdf), kind="file", path=long_pdf)).result()
        assert paper.doc.pages < 41
    missing = ExtractOptions(tokenizer_dir=str(long_pdf.parent / "no-such-model"), token_limit=2000)
    with Extractor(missing, timeout=0, workers=1) as extractor:  # no tokenizer: every page, no error
        assert extractor.submit(Source(name=str(long_pdf), kind="file", path=long_pdf)).result().doc.pages == 41
