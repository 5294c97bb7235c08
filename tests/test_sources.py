"""What an input is: discovery, output names, reading, and extraction under a time limit."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from arxsum.errors import InputError
from arxsum.sources import BadInput, ExtractOptions, Extractor, Source, discover, read_bytes, read_names

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/samples")


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for name in ["a.pdf", "b.txt", "notes.md", "c.tex", "skip.json", "sub/d.txt", "sub/deeper/e.PDF",
                 ".hidden/x.txt", ".dotfile.txt"]:
        (root / name).write_text("hello world")
    return root


def names(found):
    return [(f.name if isinstance(f, Source) else ("BAD", f.name)) for f in found]


def test_directories_are_searched_recursively_in_sorted_order_without_hidden_files(tmp_path):
    root = make_tree(tmp_path / "papers")
    found = discover([str(root)])
    assert [Path(f.name).relative_to(root).as_posix() for f in found] == [
        "a.pdf", "b.txt", "c.tex", "notes.md", "sub/d.txt", "sub/deeper/e.PDF"]
    assert [str(f.rel) for f in found] == ["a", "b", "c", "notes", "sub/d", "sub/deeper/e"]


def test_glob_chooses_the_files_of_a_folder(tmp_path):
    root = make_tree(tmp_path / "papers")
    found = discover([str(root)], globs=["*.txt"])
    assert [Path(f.name).name for f in found] == ["b.txt", "d.txt"]
    assert [Path(f.name).name for f in discover([str(root)], globs=["sub/*"])] == ["d.txt", "e.PDF"]  # fnmatch: * crosses folders


def test_the_output_folder_is_not_searched_for_papers(tmp_path):
    root = make_tree(tmp_path / "papers")
    found = discover([str(root)], exclude=root / "sub")
    assert [Path(f.name).name for f in found] == ["a.pdf", "b.txt", "c.tex", "notes.md"]


def test_a_folder_with_no_papers_and_a_missing_path_are_bad_inputs_in_place(tmp_path):
    (tmp_path / "empty").mkdir()
    good = tmp_path / "p.txt"
    good.write_text("x")
    found = discover([str(tmp_path / "empty"), str(good), str(tmp_path / "missing.pdf")])
    assert isinstance(found[0], BadInput) and "no papers" in found[0].reason
    assert isinstance(found[1], Source) and found[1].rel == PurePosixPath("p")
    assert isinstance(found[2], BadInput) and "no such file" in found[2].reason


def test_stdin_and_arxiv_ids_are_sources():
    found = discover(["-", "2210.15497", "arXiv:2210.15497v2", "math/0211159",
                      "https://arxiv.org/abs/2210.15497", "https://arxiv.org/pdf/math/0211159v1"])
    assert [f.kind for f in found] == ["stdin"] + ["arxiv"] * 5
    assert [f.arxiv_id for f in found[1:]] == ["2210.15497", "2210.15497v2", "math/0211159", "2210.15497",
                                               "math/0211159v1"]
    assert str(found[3].rel) == "math_0211159"


def test_inputs_sharing_a_stem_keep_their_suffix_and_leftover_clashes_are_numbered(tmp_path):
    for name in ["x.pdf", "x.tex", "y.pdf", "other/y.pdf"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("t")
    found = discover([str(tmp_path / n) for n in ["x.pdf", "x.tex", "y.pdf", "other/y.pdf"]])
    assert [str(f.rel) for f in found] == ["x.pdf", "x.tex", "y.pdf", "y.pdf~2"]


def test_files_from_reads_one_name_a_line():
    import io

    assert read_names(io.StringIO("a.pdf\n\n  b.txt \n2210.15497\n")) == ["a.pdf", "b.txt", "2210.15497"]


def test_read_bytes_turns_os_errors_into_one_line(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_bytes(Source(name="x", kind="file", path=tmp_path / "gone.pdf"))


def test_extraction_runs_in_a_worker_and_a_slow_file_is_killed_without_stopping_the_next(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("a short paper body")
    paper = SAMPLES / "papers" / "robust-sls-matni.pdf"
    with Extractor(ExtractOptions(), timeout=0.01, workers=1) as extractor:
        slow = extractor.submit(Source(name=str(paper), kind="file", path=paper))
        with pytest.raises(InputError, match="longer than 0.01s"):
            slow.result(timeout=60)
        extractor.timeout = 60
        paper = extractor.submit(Source(name=str(good), kind="file", path=good)).result(timeout=60)
    assert paper.doc.body == "a short paper body" and paper.doc.source == str(good)
    assert paper.model_text is not None and paper.seconds > 0


@pytest.mark.parametrize("name, reason", [
    ("encrypted-rc4-40-userpw.pdf", "password"),
    ("scanned-no-text-ccitt.pdf", "no text layer"),
    ("not-a-pdf-garbage.pdf", "not a PDF"),
    ("zero-pages.pdf", "zero pages"),
])
def test_bad_pdfs_fail_with_one_line_from_the_worker(name, reason):
    path = SAMPLES / "edge" / name
    with Extractor(ExtractOptions(), timeout=60, workers=1) as extractor:
        with pytest.raises(InputError, match=reason) as info:
            extractor.submit(Source(name=str(path), kind="file", path=path)).result(timeout=60)
    assert "\n" not in str(info.value)


def test_password_opens_an_encrypted_pdf():
    path = SAMPLES / "edge" / "encrypted-rc4-40-userpw.pdf"
    with Extractor(ExtractOptions(password="asdfzxcv"), timeout=0) as extractor:
        paper = extractor.submit(Source(name=str(path), kind="file", path=path)).result(timeout=60)
    assert paper.doc.body.strip()


def test_a_worker_that_dies_fails_its_file_in_one_line_and_is_replaced(tmp_path):
    import time

    good = tmp_path / "good.txt"
    good.write_text("body")
    paper = SAMPLES / "papers" / "robust-sls-matni.pdf"
    with Extractor(ExtractOptions(), timeout=60, workers=1) as extractor:
        future = extractor.submit(Source(name=str(paper), kind="file", path=paper))
        deadline = time.monotonic() + 30
        while not (extractor._procs and extractor._procs[0].proc is not None) and time.monotonic() < deadline:
            time.sleep(0.01)
        extractor._procs[0].proc.kill()  # what a segfault in a PDF library looks like from here
        with pytest.raises(InputError, match="extraction crashed"):
            future.result(timeout=60)
        assert extractor.submit(Source(name=str(good), kind="file", path=good)).result(timeout=60).doc.body == "body"


# --- LaTeX projects (issue 15) ------------------------------------------------------------------

MAIN_TEX = ("\\documentclass{article}\\begin{document}\\section{Intro}\\input{sections/a}"
            "\\includegraphics{fig}\\bibliography{refs}\\end{document}")


def make_projects(root: Path) -> Path:
    """A folder of papers: a project folder (with its figure, .bib and built PDF), an e-print, a PDF, a lone .tex."""
    import io
    import tarfile

    files = {"proj/main.tex": MAIN_TEX, "proj/sections/a.tex": "Section words.", "proj/sections/old.tex": "Unused.",
             "proj/fig.pdf": "%PDF-1.4 figure", "proj/main.pdf": "%PDF-1.4 built", "proj/refs.bib": "@article{x}",
             "x.pdf": "%PDF-1.4 paper", "lone/notes.tex": "A note without a document environment."}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in [("main.tex", MAIN_TEX), ("sections/a.tex", "Archived words.")]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    (root / "eprint.tar.gz").write_bytes(buf.getvalue())
    (root / "proj" / "main.synctex.gz").write_bytes(b"\x1f\x8b not a paper")
    return root


def test_a_folder_of_projects_gives_one_paper_per_project_and_per_pdf(tmp_path):
    root = make_projects(tmp_path / "papers")
    found = discover([str(root)])
    assert [Path(f.name).relative_to(root).as_posix() for f in found] == [
        "eprint.tar.gz", "x.pdf", "lone/notes.tex", "proj/main.tex"]
    assert [str(f.rel) for f in found] == ["eprint", "x", "lone/notes", "proj/main"]
    assert [Path(f.name).name for f in discover([str(root / "proj")])] == ["main.tex"]


def test_a_project_main_file_is_read_with_its_includes_in_the_worker(tmp_path):
    root = make_projects(tmp_path / "papers")
    with Extractor(ExtractOptions(), timeout=60, workers=1) as extractor:
        main = extractor.submit(Source(name=str(root / "proj/main.tex"), kind="file", path=root / "proj/main.tex"))
        eprint = extractor.submit(Source(name=str(root / "eprint.tar.gz"), kind="file", path=root / "eprint.tar.gz"))
        bad = extractor.submit(Source(name="bad.tar.gz", kind="file", path=root / "proj" / "main.synctex.gz"))
        assert main.result(timeout=60).doc.body == "Section words."
        assert eprint.result(timeout=60).doc.body == "Archived words."
        with pytest.raises(InputError, match="damaged or unreadable archive") as info:
            bad.result(timeout=60)
    assert "\n" not in str(info.value)


def test_bad_archives_fail_one_line_each_and_the_batch_goes_on(tmp_path, fake_summarizer):
    import io
    import json
    import zipfile

    from arxsum.runner import RunConfig, run

    root = make_projects(tmp_path / "papers")
    (root / "cut.tar.gz").write_bytes((root / "eprint.tar.gz").read_bytes()[:60])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.tex", MAIN_TEX)
        zf.writestr("b.tex", MAIN_TEX)
    (root / "two-mains.zip").write_bytes(buf.getvalue())
    out = io.StringIO()
    cfg = RunConfig(inputs=[str(root)], format="jsonl", timeout=0, quiet=True)
    report = run(cfg, load_summarizer=lambda: fake_summarizer, stdin=io.BytesIO(), stdout=out)
    status = {Path(o.name).name: (o.status, o.reason) for o in report.outcomes}
    assert report.exit_code == 1
    assert "damaged or unreadable archive" in status["cut.tar.gz"][1]
    assert "several main .tex files" in status["two-mains.zip"][1] and "(a.tex, b.tex)" in status["two-mains.zip"][1]
    assert status["eprint.tar.gz"][0] == status["main.tex"][0] == status["notes.tex"][0] == "done"
    assert status["x.pdf"][0] == "failed"  # no real PDF: it fails on its own line too
    assert len(status) == 6
    assert all("\n" not in reason for _, reason in status.values())
    kinds = {json.loads(line)["source"].rsplit("/", 1)[-1]: json.loads(line)["kind"] for line in out.getvalue().splitlines()}
    assert kinds["eprint.tar.gz"] == kinds["main.tex"] == "tex"
