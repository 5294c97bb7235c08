"""arXiv ids and URLs, downloads against a local HTTP server, the cache and the rate limit."""

from __future__ import annotations

import http.server
import io
import threading
import time

import pytest

from arxsum.arxiv import USER_AGENT, ArxivClient, parse_arxiv_id
from arxsum.errors import InputError

PDF = b"%PDF-1.4 fake paper bytes"


@pytest.mark.parametrize("text, expected", [
    ("2210.15497", "2210.15497"),
    ("arXiv:2210.15497v2", "2210.15497v2"),
    ("arxiv:0704.0001", "0704.0001"),
    ("math/0211159", "math/0211159"),
    ("math.AG/0211159v3", "math.AG/0211159v3"),
    ("hep-th/9901001", "hep-th/9901001"),
    ("https://arxiv.org/abs/2210.15497", "2210.15497"),
    ("https://arxiv.org/pdf/2210.15497v1", "2210.15497v1"),
    ("http://export.arxiv.org/pdf/2210.15497.pdf", "2210.15497"),
    ("https://arxiv.org/abs/math/0211159", "math/0211159"),
    ("paper.pdf", None),
    ("2210.1549", None),
    ("https://example.org/abs/2210.15497", None),
    ("https://arxiv.org/list/cs.CL/new", None),
])
def test_parse_arxiv_id(text, expected):
    assert parse_arxiv_id(text) == expected


class ArxivStub(http.server.BaseHTTPRequestHandler):
    papers = {"/pdf/2210.15497": PDF, "/pdf/math/0211159": PDF + b" old", "/pdf/9999.00001": b"<html>"}
    seen: list[tuple[str, str, float]] = []

    def do_GET(self):  # noqa: N802
        ArxivStub.seen.append((self.path, self.headers.get("User-Agent", ""), time.monotonic()))
        body = self.papers.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def arxiv_server():
    """A stand-in for arxiv.org on 127.0.0.1, on a free port."""
    ArxivStub.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArxivStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_once_with_a_user_agent_then_from_the_cache(arxiv_server, tmp_path):
    client = ArxivClient(base=arxiv_server, cache_dir=tmp_path, delay=0)
    assert client.fetch_pdf("2210.15497") == PDF
    assert client.fetch_pdf("2210.15497") == PDF
    assert [(path, agent) for path, agent, _ in ArxivStub.seen] == [("/pdf/2210.15497", USER_AGENT)]
    assert (tmp_path / "2210.15497.pdf").read_bytes() == PDF
    assert client.fetch_pdf("math/0211159").endswith(b" old")
    assert (tmp_path / "math_0211159.pdf").exists()


def test_requests_are_spaced_by_the_delay(arxiv_server, tmp_path):
    client = ArxivClient(base=arxiv_server, cache_dir=tmp_path, delay=0.3)
    client.fetch_pdf("2210.15497")
    client.fetch_pdf("math/0211159")
    (_, _, first), (_, _, second) = ArxivStub.seen
    assert second - first >= 0.29


def test_the_default_delay_is_arxivs_three_seconds(monkeypatch):
    monkeypatch.delenv("ARXSUM_ARXIV_DELAY", raising=False)
    assert ArxivClient().delay == 3.0
    monkeypatch.setenv("ARXSUM_ARXIV_DELAY", "0.5")
    assert ArxivClient().delay == 0.5


def test_404_and_non_pdf_and_offline_are_one_line_input_errors(arxiv_server, tmp_path):
    client = ArxivClient(base=arxiv_server, cache_dir=tmp_path, delay=0)
    with pytest.raises(InputError, match="no paper 2301.00001 .404"):
        client.fetch_pdf("2301.00001")
    with pytest.raises(InputError, match="did not return a PDF"):
        client.fetch_pdf("9999.00001")
    assert not (tmp_path / "9999.00001.pdf").exists()
    offline = ArxivClient(base="http://127.0.0.1:9", cache_dir=tmp_path, delay=0, timeout=5)
    with pytest.raises(InputError, match="cannot reach arXiv"):
        offline.fetch_pdf("2210.15497")


def test_a_batch_with_arxiv_ids_summarizes_the_good_ones(arxiv_server, tmp_path, monkeypatch, fake_summarizer):
    from arxsum.runner import RunConfig, run

    monkeypatch.setenv("ARXSUM_ARXIV_URL", arxiv_server)
    monkeypatch.setattr("arxsum.sources.extract_document",
                        lambda data, name, options: __import__("arxsum.document").document.Document(
                            source=name, kind="pdf", body=data.decode()))
    client = ArxivClient(cache_dir=tmp_path / "cache", delay=0)
    out = io.StringIO()
    cfg = RunConfig(inputs=["arXiv:2210.15497", "2301.00001", f"{arxiv_server}/abs/math/0211159"],
                    format="jsonl", timeout=0, quiet=True)
    report = run(cfg, load_summarizer=lambda: fake_summarizer, stdin=io.BytesIO(), stdout=out, arxiv=client)
    assert report.exit_code == 1
    assert [o.status for o in report.outcomes] == ["done", "failed", "done"]
    assert "404" in report.outcomes[1].reason
    assert [line.split('"')[3] for line in out.getvalue().splitlines()] == [
        "arXiv:2210.15497", f"{arxiv_server}/abs/math/0211159"]


# --- LaTeX sources: /e-print/ID (issue 15) -------------------------------------------------------

def _eprint(files: dict[str, str]) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


MAIN = "\\documentclass{article}\\begin{document}\\section{A}%s\\end{document}"
EPRINTS = {
    "/e-print/2210.15497": _eprint({"main.tex": MAIN % "\\input{body}", "body.tex": "Words from the source."}),
    "/e-print/2210.15498": PDF,  # a PDF-only submission: its e-print is the PDF
    "/e-print/2210.15499": _eprint({"main.tex": MAIN % ""}),  # LaTeX without a body
    "/e-print/2210.15500": __import__("gzip").compress((MAIN % "One gzipped file.").encode()),
    "/pdf/2210.15499": PDF, "/pdf/2210.15500": PDF,
}


@pytest.fixture
def pdf_is_text(monkeypatch):
    """PDFs read as their bytes' text (the stub's PDFs are not real); LaTeX goes through the real reader."""
    from arxsum import sources
    from arxsum.document import Document

    real = sources.extract_document

    def fake(data, name, options):
        if data.startswith(b"%PDF-"):
            return Document(source=name, kind="pdf", body=data.decode())
        return real(data, name, options)

    monkeypatch.setattr(sources, "extract_document", fake)


def _read(client, arxiv_id):
    from arxsum.sources import ExtractOptions, Extractor, Source

    with Extractor(ExtractOptions(), timeout=0, arxiv=client) as extractor:
        return extractor.submit(Source(name=arxiv_id, kind="arxiv", arxiv_id=arxiv_id)).result(timeout=60).doc


def test_auto_reads_the_latex_source_once_and_caches_it(arxiv_server, tmp_path, monkeypatch, pdf_is_text):
    monkeypatch.setattr(ArxivStub, "papers", {**ArxivStub.papers, **EPRINTS})
    client = ArxivClient(base=arxiv_server, cache_dir=tmp_path, delay=0)
    doc = _read(client, "2210.15497")
    assert doc.kind == "tex" and doc.body == "Words from the source."
    assert _read(client, "2210.15497").body == "Words from the source."
    assert [(p, agent) for p, agent, _ in ArxivStub.seen] == [("/e-print/2210.15497", USER_AGENT)]
    assert (tmp_path / "2210.15497.e-print").is_file()
    assert _read(client, "2210.15500").body == "One gzipped file."


def test_auto_falls_back_to_the_pdf(arxiv_server, tmp_path, monkeypatch, pdf_is_text):
    eprints = {k: v for k, v in EPRINTS.items() if k != "/e-print/2210.15497"}
    monkeypatch.setattr(ArxivStub, "papers", {**ArxivStub.papers, **eprints})
    client = ArxivClient(base=arxiv_server, cache_dir=tmp_path, delay=0)
    pdf_only = _read(client, "2210.15498")
    assert pdf_only.kind == "pdf" and pdf_only.body == PDF.decode()
    assert (tmp_path / "2210.15498.pdf").read_bytes() == PDF  # the e-print was the PDF: no second request
    no_body = _read(client, "2210.15499")
    assert no_body.kind == "pdf" and "LaTeX source not usable (no body text" in no_body.warnings[0]
    missing = _read(client, "2210.15497")  # /e-print 404s here: the stub knows only the PDF
    assert missing.kind == "pdf" and missing.warnings[0].startswith("no LaTeX source (arXiv has no paper")
    assert [p for p, _, _ in ArxivStub.seen] == ["/e-print/2210.15498", "/e-print/2210.15499", "/pdf/2210.15499",
                                                  "/e-print/2210.15497", "/pdf/2210.15497"]


def test_source_latex_and_pdf_choose(arxiv_server, tmp_path, monkeypatch, pdf_is_text):
    monkeypatch.setattr(ArxivStub, "papers", {**ArxivStub.papers, **EPRINTS})
    pdf = ArxivClient(base=arxiv_server, cache_dir=tmp_path / "a", delay=0, source="pdf")
    assert _read(pdf, "2210.15497").kind == "pdf"
    assert [p for p, _, _ in ArxivStub.seen] == ["/pdf/2210.15497"]
    latex = ArxivClient(base=arxiv_server, cache_dir=tmp_path / "b", delay=0, source="latex")
    with pytest.raises(InputError, match="PDF-only submission"):
        _read(latex, "2210.15498")
    with pytest.raises(InputError, match="no body text"):
        _read(latex, "2210.15499")
    with pytest.raises(Exception, match="--source must be one of"):
        ArxivClient(source="html")


def test_the_json_output_says_what_was_read(arxiv_server, tmp_path, monkeypatch, pdf_is_text, fake_summarizer):
    import json

    from arxsum.runner import RunConfig, run

    monkeypatch.setattr(ArxivStub, "papers", {**ArxivStub.papers, **EPRINTS})
    client = ArxivClient(base=arxiv_server, cache_dir=tmp_path, delay=0)
    out = io.StringIO()
    cfg = RunConfig(inputs=["2210.15497", "2210.15498"], format="jsonl", timeout=0, quiet=True)
    report = run(cfg, load_summarizer=lambda: fake_summarizer, stdin=io.BytesIO(), stdout=out, arxiv=client)
    assert report.exit_code == 0
    assert [json.loads(line)["kind"] for line in out.getvalue().splitlines()] == ["tex", "pdf"]
