"""Extraction: real arXiv papers (PDF and LaTeX), generated PDFs with known text, bad inputs, the command.

The real-paper tests measure what issue 4 judges, for each sample in /work/shared/samples/papers:
no abstract, title, references, captions or running headers in the model input; no ligature or
control characters; no words broken at line ends; lowercase; @xcite for citations and no numeric or
author-year citation left; @xmath for math and no Greek letters or operators outside it; and at
least 95% of the words of the .tex body kept; and issue 17's precision: at most 0.3% of the body's
words (4 letters or more) absent from the paper's .tex. `python tests/test_extract.py` prints the
figures, with the worst absent words.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from arxsum.commands.extract import register
from arxsum.document import Document
from arxsum.errors import InputError
from arxsum.extract import detect_kind, extract
from arxsum.latex import balanced, latex_document, to_text
from arxsum.normalize import MATH_ONLY, to_model_text, to_training_text

sys.path.insert(0, str(Path(__file__).parent))
import pdf_factory  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/samples")
PAPERS = SAMPLES / "papers"
EDGE = SAMPLES / "edge"
PAPER_NAMES = sorted(p.stem for p in PAPERS.glob("*.pdf")) if PAPERS.is_dir() else []
needs_samples = pytest.mark.skipif(not PAPER_NAMES, reason="sample papers not present")


# --- measuring a paper -------------------------------------------------------------------------

@cache
def model_input(name: str, suffix: str = ".pdf") -> tuple[Document, str]:
    doc = extract((PAPERS / f"{name}{suffix}").read_bytes(), f"{name}{suffix}")
    return doc, to_model_text(doc).text


@cache
def tex_body(name: str, keep_appendix: bool = False) -> str | None:
    """The normalised body of the paper's .tex, None when the .tex holds no body (\\input files)."""
    try:
        doc = latex_document((PAPERS / f"{name}.tex").read_text(), f"{name}.tex", keep_appendix=keep_appendix)
    except InputError:
        return None
    return to_model_text(doc).text


def normalised(latex: str) -> str:
    return to_training_text(to_text(latex))[0]


def words(text: str) -> list[str]:
    return [w for w in text.split() if re.fullmatch(r"[a-z]+", w)]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def leaked(part: str, output: str, allowed: str, n: int = 8) -> int:
    """How many of the part's word n-grams are in the output but not in the paper's real body."""
    return len((ngrams(part, n) & ngrams(output, n)) - ngrams(allowed, n))


def caption_texts(tex: str) -> list[str]:
    out = []
    for m in re.finditer(r"\\caption\*?\s*(\[[^\]]*\])?\s*\{", tex):
        inner = balanced(tex, m.end() - 1)
        if inner:
            out.append(inner)
    return out


@cache
def plain_pages(name: str) -> tuple[str, ...]:
    """pypdf's plain text of each page, independent of our layout analysis."""
    import pypdf

    return tuple(page.extract_text() or "" for page in pypdf.PdfReader(PAPERS / f"{name}.pdf").pages)


def references_text(name: str) -> str:
    """The references list as pypdf's plain text gives it: after the last 'References' line."""
    text = "\n".join(plain_pages(name))
    heads = list(re.finditer(r"^\s*(\d+\s*)?(references|bibliography)\s*$", text, re.IGNORECASE | re.MULTILINE))
    return text[heads[-1].end():] if heads else ""


def running_headers(name: str) -> list[str]:
    """First and last lines that repeat (digits aside) on three or more pages."""
    seen: Counter[str] = Counter()
    for page in plain_pages(name):
        lines = [ln.strip() for ln in page.splitlines() if ln.strip()]
        for ln in set(lines[:2] + lines[-2:]):
            seen[re.sub(r"\d+", "", ln)] += 1
    return [ln for ln, k in seen.items() if k >= 3 and len(ln.split()) >= 3]


def broken_words(output: str, vocab: set[str]) -> int:
    """'op - posite' where 'opposite' is a word of the paper and 'op-posite' is not."""
    count = 0
    for a, b in re.findall(r"\b([a-z]+) - ([a-z]+)\b", output):
        if a + b in vocab and f"{a} - {b}" not in vocab:
            count += 1
    return count


@cache
def tex_words(name: str) -> frozenset[str]:
    """Every lowercase letter run of the paper's .tex (comments aside): its words, wherever they are."""
    source = re.sub(r"(?<!\\)%.*", "", (PAPERS / f"{name}.tex").read_text())
    return frozenset(re.findall(r"[a-z]+", source.lower()))


def absent_words(name: str, output: str) -> Counter[str]:
    """The output's words of 4 or more letters that the paper's .tex never contains (precision)."""
    vocab = tex_words(name)
    return Counter(w for w in words(output) if len(w) >= 4 and w not in vocab)


def precision_figures(name: str, output: str, has_tex_body: bool) -> dict:
    """Share of body words (>= 4 letters) absent from the .tex, in percent, and the worst ones."""
    if not has_tex_body:
        return {"body words absent from .tex %": None, "worst absent words": None}
    absent = absent_words(name, output)
    total = sum(1 for w in words(output) if len(w) >= 4)
    worst = " ".join(f"{w}({k})" for w, k in absent.most_common(6)) or "-"
    return {"body words absent from .tex %": round(100 * sum(absent.values()) / max(1, total), 2),
            "worst absent words": worst}


def figures(name: str, suffix: str = ".pdf") -> dict:
    """The judged figures for one sample paper, read from its PDF (or its .tex)."""
    doc, out = model_input(name, suffix)
    tex_source = (PAPERS / f"{name}.tex").read_text()
    body = tex_body(name)
    full = tex_body(name, keep_appendix=True) or ""
    allowed = body or out
    abstract = normalised((PAPERS / f"{name}.abstract.txt").read_text())
    title_m = re.search(r"\\title\s*(\[[^\]]*\])?\s*\{", tex_source)
    title = normalised(balanced(tex_source, title_m.end() - 1)) if title_m else ""
    captions = " . ".join(normalised(c) for c in caption_texts(tex_source))
    refs = to_training_text(references_text(name))[0]
    headers = [to_training_text(h)[0] for h in running_headers(name)]
    tex_words = Counter(words(body)) if body else None
    out_words = Counter(words(out))
    vocab = set(words(body or "")) | {w for w in out_words if out_words[w] > 1}
    vocab |= set(re.findall(r"[a-z]+ - [a-z]+", body or ""))
    kept = (sum(min(k, out_words[w]) for w, k in tex_words.items()) / sum(tex_words.values())
            if tex_words else None)
    outside = re.sub(r"@xmath\d+", " ", out)
    return {
        "abstract 8-grams leaked": leaked(abstract, out, allowed),
        "title in output": bool(title) and " ".join(words(title)) in " ".join(words(out)),
        "reference 8-grams leaked": leaked(refs, out, full + " " + (body or "")),
        "caption 6-grams leaked": leaked(captions, out, full, 6),
        "running headers leaked": sum(1 for h in headers if h and h in out and h not in (body or "")),
        "ligature/control chars": len(re.findall(r"[\ufb00-\ufb4f\x00-\x09\x0b-\x1f\x7f-\x9f]", out)),
        "broken words": broken_words(out, vocab),
        "lowercase": out == out.lower(),
        "@xcite": out.count("@xcite"),
        "numeric citations left": len(re.findall(r"\[ \d+(?: [,-] \d+)* \]", out)),
        "author-year citations left": len(re.findall(
            r"\b(?:et al \.|[a-z]+ (?:and|&) [a-z]+)(?: ,)?(?: \()? (?:19|20)\d\d[a-z]?\b", out)),
        "@xmath": len(re.findall(r"@xmath\d+", out)),
        "math chars outside @xmath": len(MATH_ONLY.findall(outside.replace("_", "").replace("|", ""))),
        "tex body words kept": None if kept is None else round(100 * kept, 1),
        "tex body 8-grams in order": None if body is None else
        round(100 * len(ngrams(body, 8) & ngrams(out, 8)) / max(1, len(ngrams(body, 8))), 1),
        **precision_figures(name, out, body is not None),
        "pages": doc.pages,
    }


# --- the real papers ---------------------------------------------------------------------------

@needs_samples
@pytest.mark.parametrize("name", PAPER_NAMES)
def test_real_paper_meets_the_judged_figures(name):
    f = figures(name)
    assert f["abstract 8-grams leaked"] == 0
    assert not f["title in output"]
    assert f["reference 8-grams leaked"] == 0
    assert f["caption 6-grams leaked"] <= 2
    assert f["running headers leaked"] == 0
    assert f["ligature/control chars"] == 0
    assert f["broken words"] <= 1
    assert f["lowercase"]
    assert f["@xcite"] > 0
    assert f["numeric citations left"] == 0 and f["author-year citations left"] == 0
    assert f["@xmath"] > 0 and f["math chars outside @xmath"] == 0
    if f["tex body words kept"] is not None:
        assert f["tex body words kept"] >= 95
        assert f["body words absent from .tex %"] <= 0.3, f["worst absent words"]


@needs_samples
def test_precision_measure_sees_broken_and_foreign_words():
    """A body whose fi ligatures were dropped ("speci c") and with a plot's legend in it fails the measure."""
    name = next(n for n in PAPER_NAMES if tex_body(n) is not None)
    _, out = model_input(name)
    broken = re.sub("fi", " ", out) + " histogram binwidth histogram binwidth"
    absent = absent_words(name, broken)
    assert not absent_words(name, re.sub(r"\w*fi\w*", " ", out)) - absent_words(name, out)
    assert sum(absent.values()) > sum(absent_words(name, out).values()) + 4 and absent["binwidth"] == 2
    before = precision_figures(name, out, True)["body words absent from .tex %"]
    assert precision_figures(name, broken, True)["body words absent from .tex %"] > before + 0.3


@needs_samples
@pytest.mark.parametrize("name", PAPER_NAMES)
def test_real_paper_parts(name):
    doc, _ = model_input(name, ".pdf")
    assert doc.title and doc.abstract and len(doc.sections) >= 4
    abstract_words = words(normalised((PAPERS / f"{name}.abstract.txt").read_text()))
    found = set(words(to_training_text(doc.abstract)[0]))
    assert sum(w in found for w in abstract_words) >= 0.9 * len(abstract_words)
    assert not any(re.match(r"(\d+\.?\s*)?references$", s, re.IGNORECASE) for s in doc.sections)
    # the .tex's sections are all found, and nothing else that is not a numbered heading
    source = (PAPERS / f"{name}.tex").read_text()
    source = re.split(r"\\bibliography\{|\\begin\{thebibliography\}", source)[0]
    tex_sections = {" ".join(t.lower().split()) for t in re.findall(r"\\section\*?\{([^{}]*)\}", source)}
    found = {re.sub(r"^[\dIVX.]+\s+", "", s).lower() for s in doc.sections}
    assert tex_sections <= found
    assert all(re.match(r"^[\dIVX]+(\.\d+)*\.?\s+\S", s) or s.lower() in tex_sections | {"acknowledgements",
               "acknowledgments"} for s in doc.sections), doc.sections


@needs_samples
def test_latex_source_parts():
    doc = latex_document((PAPERS / "dv-cosine-sentiment.tex").read_text(), "p.tex")
    assert doc.kind == "tex" and doc.title.startswith("Sentiment Classification")
    assert doc.abstract.startswith("In document-level sentiment classification")
    assert doc.sections[0] == "Introduction" and "Conclusion and Future Work" in doc.sections
    text = to_model_text(doc).text
    assert "@xcite" in text and "@xmath0" in text and "\\" not in text


@needs_samples
def test_latex_appendix_after_the_bibliography_only_when_asked():
    source = (PAPERS / "dv-cosine-sentiment.tex").read_text()
    short = latex_document(source, "p.tex")
    long = latex_document(source, "p.tex", keep_appendix=True)
    appendix = "Obtaining the weight update equations in the case of cosine similarity"
    assert appendix not in short.sections and appendix in long.sections
    assert len(long.body) > len(short.body) and short.dropped["appendix characters"] > 0


@needs_samples
def test_latex_with_body_in_input_files_is_an_input_error():
    with pytest.raises(InputError, match="inputs introduction"):
        latex_document((PAPERS / "robust-sls-matni.tex").read_text(), "m.tex")


# --- generated PDFs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return pdf_factory.build_all(tmp_path_factory.mktemp("pdfs"))


@pytest.mark.parametrize("layout", ["one_column", "two_column", "ieee_like"])
def test_generated_paper_reads_in_order_without_furniture(generated, layout):
    spec = generated[layout]
    doc = extract(spec.path.read_bytes(), spec.path.name)
    body = " ".join(doc.body.split())
    assert doc.title == spec.title
    assert " ".join(doc.abstract.split()) == spec.abstract
    assert doc.sections == spec.sections
    assert body == spec.body  # reading order, hyphenation, ligatures, no headers/captions/footnotes
    for noise in spec.noise:
        assert noise not in doc.body


def test_fonts_without_maps_read_in_their_tex_encoding(generated):
    """OT1 (CMR), T1 (SFRM) and OT1 typewriter (CMTT) fonts with no /Encoding, /ToUnicode or font
    program: pypdf alone gives control characters for the ligatures and ASCII for the quotes and
    dashes; extraction gives the paper's characters, and counts what it could not map."""
    import pypdf

    spec = generated["tex_fonts"]
    plain = pypdf.PdfReader(spec.path).pages[0].extract_text()
    assert "\x0crst" in plain and "\\small\"" in plain  # the defect, as pypdf alone shows it
    doc = extract(spec.path.read_bytes(), spec.path.name)
    assert " ".join(doc.body.split()) == spec.body
    assert doc.title == spec.title and doc.abstract == spec.abstract and doc.sections == spec.sections
    assert doc.dropped["control characters"] == 1
    text = to_model_text(doc).text
    assert "significant" in text and "offline" in text and "computation" in text and "\x0c" not in text


def test_fonts_that_pypdf_can_read_are_left_alone():
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    from arxsum.fontenc import OT1, OT1_TT, T1, pypdf_reads_its_encoding, tex_encoding

    def font(**entries) -> DictionaryObject:
        return DictionaryObject({NameObject(f"/{k}"): v for k, v in entries.items()})

    program = DecodedStreamObject()
    program.set_data(b"%!PS-AdobeFont-1.0: CMR10\n/Encoding 256 array\ndup 12 /fi put\nreadonly def\n"
                     b"currentfile eexec\n\x8f\x00")
    bare = font(BaseFont=NameObject("/ABCDEF+CMR10"))
    assert not pypdf_reads_its_encoding(bare)
    assert pypdf_reads_its_encoding(font(BaseFont=NameObject("/CMR10"), Encoding=NameObject("/WinAnsiEncoding")))
    assert pypdf_reads_its_encoding(font(FontDescriptor=font(FontFile=program)))
    program.set_data(b"%!PS-AdobeFont-1.0: CMR10\n/Encoding StandardEncoding def\ncurrentfile eexec\n")
    assert not pypdf_reads_its_encoding(font(FontDescriptor=font(FontFile=program)))
    assert tex_encoding("ABCDEF+CMBX12") is OT1 and tex_encoding("CMTT10") is OT1_TT
    assert tex_encoding("ECRM1000") is T1 and tex_encoding("CMMI10") is None and tex_encoding("Times-Roman") is None
    assert OT1[0x0E] == "\ufb03" and T1[0x1E] == "\ufb03" and OT1[0x7B] == "–" and OT1_TT[0x7B] == "{"


def test_generated_paper_model_text(generated):
    text = to_model_text(extract(generated["ieee_like"].path.read_bytes(), "x.pdf")).text
    assert "roman numerals ." in text and "the work of @xcite ." in text and text == text.lower()


def test_generated_paper_keeps_appendix_only_when_asked(generated):
    spec = generated["two_column"]
    doc = extract(spec.path.read_bytes(), spec.path.name, keep_appendix=True)
    assert spec.appendix in " ".join(doc.body.split())
    assert spec.appendix not in extract(spec.path.read_bytes(), spec.path.name).body


def test_generated_paper_hyphens(generated):
    body = extract(generated["one_column"].path.read_bytes(), "x.pdf").body
    assert "opposite" in body and "well-known" in body and "op-" not in body


def test_line_end_hyphens_by_the_papers_own_words(generated):
    spec = generated["hyphens"]
    body = " ".join(extract(spec.path.read_bytes(), spec.path.name).body.split())
    assert body == spec.body
    text = to_model_text(extract(spec.path.read_bytes(), spec.path.name)).text
    assert "line - of - sight speed" in text and "un - like" not in text and "in - dependent" not in text


def test_keep_hyphen_rules():
    from arxsum.paper import Evidence, keep_hyphen

    paper = Evidence(counts=Counter({"cooperation": 2, "co-operation": 1, "energy": 1, "orbits": 1}),
                     parts={"cooperation", "co", "operation", "energy", "orbits"})
    assert not keep_hyphen("co", "operation", paper)  # the joined form is the more frequent
    paper.counts["co-operation"] += 1
    assert keep_hyphen("co", "operation", paper)  # a tie keeps the hyphen
    assert keep_hyphen("negative", "energy", paper) and not keep_hyphen("inter", "action", paper)
    assert not keep_hyphen("op", "posite", paper) and keep_hyphen("x", "axis", paper)
    assert keep_hyphen("semi", "conductor", paper)  # no evidence: a compound's first part keeps it
    with_model = Evidence(counts=paper.counts, parts=paper.parts, model_words=frozenset({"semiconductor"}))
    assert not keep_hyphen("semi", "conductor", with_model)  # one word of the model's vocabulary
    assert keep_hyphen("co", "operation", with_model)  # the paper's own words come first


def test_hyphens_across_a_review_copys_ruler_and_closed_compounds():
    """A ruler's line number drawn between "schol-" and "arly" does not make "arly" a word of the
    paper; "further-" / "more" joins without evidence (both halves are words of the paper)."""
    from arxsum.paper import Evidence, keep_hyphen
    from arxsum.pdftext import Fragment, Line

    texts = ["for referencing schol-", "329", "arly materials, and further-", "330", "more words."]
    evidence = Evidence.of([Line(0, [Fragment(72, 700 - 12 * i, 10, "Times", t)]) for i, t in enumerate(texts)])
    assert "arly" not in evidence.counts and "more" not in evidence.counts
    assert not keep_hyphen("schol", "arly", evidence)
    evidence.counts.update({"further": 2, "more": 3})
    assert not keep_hyphen("further", "more", evidence)


def test_small_caps_and_broken_headings_and_urls_at_a_smaller_size():
    """A small-caps heading (capitals at 12 pt, smaller capitals at 9.6) is one line and a heading;
    a line of running text whose URL is set smaller is not small print."""
    from arxsum.paper import Parts, drop_floats_and_small_print, is_heading
    from arxsum.pdftext import Fragment, Line, group_lines

    (heading,) = group_lines([Fragment(108.3, 506.4, 11.96, "Times", "1 S"),
                              Fragment(134.1, 506.4, 9.56, "Times", "UBMISSION OF CONFERENCE PAPERS TO"),
                              Fragment(340.4, 506.4, 11.96, "Times", " ICLR 2019")], page=0)
    assert is_heading(heading, 10.0)
    # a numbered title broken with \\ after "a": bold and larger, so a heading; at the body's size, a sentence
    assert is_heading(Line(1, [Fragment(72, 657, 14.5, "CMBX12", "3 Loading the data from a")]), 10.0)
    assert not is_heading(Line(1, [Fragment(72, 657, 10, "CMR10", "3 Loading the data from a")]), 10.0)
    (url_line,) = group_lines([Fragment(313, 596, 11, "Times", "available at "),
                               Fragment(370, 596, 10, "Courier", "naacl.org/naacl-hlt-2016"),
                               Fragment(490, 596, 11, "Times", ". A Mi-")], page=0)
    assert drop_floats_and_small_print([url_line], 11.0, 792, Parts(), set()) == [url_line]


def test_a_float_title_with_a_bold_label_is_a_caption():
    from arxsum.paper import Parts, drop_floats_and_small_print
    from arxsum.pdftext import Fragment, Line

    title = Line(10, [Fragment(133.8, 600, 10, "CMBX10", "Algorithm 1"),
                      Fragment(190, 600, 10, "CMR10", " Multi-step simulation error minimization")])
    sentence = Line(10, [Fragment(133.8, 500, 10, "CMR10", "Algorithm 1 details the steps required to train it.")])
    parts = Parts()
    assert drop_floats_and_small_print([title, sentence], 10.0, 792, parts, set()) == [sentence]
    assert parts.dropped["caption lines"] == 1


def test_the_margin_is_where_paragraphs_start_not_a_tables_second_column():
    from arxsum.paper import column_margins
    from arxsum.pdftext import Fragment, Line

    table = [Line(4, [Fragment(216, 700 - 12 * i, 10, "Times", "A probability distribution over a variable")])
             for i in range(20)]
    prose = [Line(4, [Fragment(108, 400 - 12 * i, 10, "Times", "Do not change any aspects of the formatting")])
             for i in range(12)]
    assert column_margins(table + prose)[(4, 0)] == 108


def test_a_table_cell_is_no_references_heading():
    from arxsum.paper import find_references
    from arxsum.pdftext import Fragment, Line

    rows = [("caption label", "9 pt bold"), ("bibliography", "10 pt"), ("footnotes", "9 pt")]
    table = [Line(3, [Fragment(x, 600 - 12 * i, 10, "Times", t)]) for i, row in enumerate(rows)
             for x, t in zip((345, 460), row, strict=True)]
    prose = [Line(3, [Fragment(313, 500 - 12 * i, 11, "Times", "the text goes on after the table")]) for i in range(3)]
    assert find_references(prose + table + prose, [], 0) is None
    heading = Line(4, [Fragment(313, 700, 11, "Times", "References")])
    assert find_references(prose + table + [heading], [], 0) == len(prose + table)


def test_model_words_from_tokenizer_files(tmp_path, generated):
    from arxsum.vocab import model_words

    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"model": {"vocab": {"\u0120unlike": 1, "\u0120Unlike": 2, "un": 3, "\u0120x2": 4, "\u0120semiconductor": 5}}}))
    assert model_words(tmp_path) == {"unlike", "semiconductor"}
    (tmp_path / "tokenizer.json").write_text("{not json")
    assert model_words(tmp_path) is None and model_words(tmp_path / "missing") is None
    spec = generated["hyphens"]  # the paper's own words still decide: the model's do not override them
    doc = extract(spec.path.read_bytes(), spec.path.name, words=frozenset({"cooperation", "lineofsight"}))
    assert " ".join(doc.body.split()) == spec.body


def test_text_inside_a_figure_is_dropped_and_the_sentence_rejoined(generated):
    """A plot's labels at the body's size, drawn inside a sentence whose word before the plot is
    hyphenated; the sentence goes on across a page break."""
    spec = generated["figure_text"]
    doc = extract(spec.path.read_bytes(), spec.path.name)
    assert " ".join(doc.body.split()) == spec.body
    assert doc.dropped["text inside figures lines"] >= 6  # 4 ticks, the axis label, the legends
    for noise in spec.noise:
        assert noise not in doc.body


def test_text_of_a_plot_drawn_on_the_page_is_dropped(generated):
    """A plot drawn with path operators in the page's own content (TikZ, pgfplots, flattened EPS),
    its tick, axis and legend labels at the body's size inside a hyphenated sentence; a framed
    theorem, an algorithm box's rules and an underline on the same page take no prose away."""
    spec = generated["figure_drawn"]
    doc = extract(spec.path.read_bytes(), spec.path.name)
    assert " ".join(doc.body.split()) == spec.body
    assert doc.dropped["text inside figures lines"] == 7  # 4 tick labels, the axis label, 2 legend entries
    for noise in spec.noise:
        assert noise not in doc.body


def _drawing(ops: list[tuple[bytes, list[float]]], cm=(1, 0, 0, 1, 0, 0)):
    from arxsum.drawing import Drawing

    drawing = Drawing()
    for operator, operands in ops:
        drawing.before(operator, operands, list(cm))
    return drawing.marks


def test_drawing_regions_are_plots_not_rules_or_frames():
    from arxsum.drawing import figure_regions

    rules = [(b"re", [72, 700, 468, 0.4]), (b"f", []), (b"m", [72, 650]), (b"l", [540, 650]), (b"S", []),
             (b"re", [100, 600, 40, 0.5]), (b"f", [])]  # table rules, a fraction bar
    frame = [(b"re", [70, 400, 472, 60]), (b"S", [])]  # a boxed equation, a framed theorem
    rounded = [(b"m", [80, 300]), *[(b"c", [0, 0, 1, 1, 80 + i, 300 + i]) for i in range(4)], (b"h", []), (b"S", [])]
    clip = [(b"re", [0, 0, 612, 792]), (b"W", []), (b"n", [])]
    assert figure_regions(_drawing(rules + frame + rounded + clip)) == []
    ticks = [op for i in range(8) for op in ((b"m", [100 + 20 * i, 100]), (b"l", [100 + 20 * i, 104]))]
    curve = [(b"m", [100, 120]), *[(b"l", [100 + 3 * i, 120 + (i % 5)]) for i in range(1, 40)], (b"S", [])]
    axes = [(b"re", [100, 100, 160, 80]), (b"S", [])]
    (plot,) = figure_regions(_drawing(axes + ticks + [(b"S", [])] + curve))
    assert (plot.x0, plot.y0, plot.x1, plot.y1) == (100, 100, 260, 180) and plot.details >= 40
    scaled = _drawing(axes + ticks + [(b"S", [])], cm=(0.5, 0, 0, 0.5, 10, 20))  # under cm: page space
    assert (scaled[0].x0, scaled[0].y0, scaled[0].x1, scaled[0].y1) == (60, 70, 140, 110)


def test_drawing_regions_of_images():
    from pypdf.generic import ArrayObject, DictionaryObject, FloatObject, NameObject

    from arxsum.drawing import Drawing, figure_regions

    def xobject(subtype, **entries):
        d = DictionaryObject({NameObject("/Subtype"): NameObject(subtype)})
        d.update({NameObject(f"/{k}"): v for k, v in entries.items()})
        return d

    page_box = ArrayObject([FloatObject(v) for v in (0, 0, 612, 792)])
    drawing = Drawing(DictionaryObject({NameObject("/Im1"): xobject("/Image"), NameObject("/Fm1"): xobject(
        "/Form", BBox=page_box)}))
    drawing.before(b"Do", [NameObject("/Im1")], [150, 0, 0, 100, 72, 500])  # an image, 150 x 100 pt
    drawing.before(b"Do", [NameObject("/Im1")], [8, 0, 0, 8, 300, 700])  # an icon
    drawing.before(b"Do", [NameObject("/Fm1")], [1, 0, 0, 1, 300, 200])  # a form: its text is known by itself
    assert [(r.x0, r.y0, r.x1, r.y1) for r in figure_regions(drawing.marks)] == [(72, 500, 222, 600)]


def test_prose_inside_a_figure_region_stays():
    from arxsum.drawing import Mark
    from arxsum.pdftext import FIGURE_TEXT, Fragment, Line, mark_figure_text

    region = Mark(60, 300, 550, 500, details=50)
    prose = Line(0, [Fragment(72, 400, 10, "Vera", "a paragraph beside the edge of a drawing goes on with many words")])
    label = Line(0, [Fragment(200, 400, 10, "Vera", "mean response length")])
    below = Line(0, [Fragment(200, 285, 10, "Vera", "angular separation [arcsec]")])
    caption = Line(0, [Fragment(72, 285, 9, "Vera", "Figure 2: The plot")])
    sentence = Line(0, [Fragment(200, 285, 10, "Vera", "which ends here.")])
    far = Line(0, [Fragment(200, 250, 10, "Vera", "a short line")])
    heading = Line(0, [Fragment(72, 285, 12, "Vera-Bold", "3 Results")])
    lines = [prose, label, below, caption, sentence, far, heading]
    mark_figure_text(lines, [region])
    assert [ln.furniture == FIGURE_TEXT for ln in lines] == [False, True, True, False, False, False, False]
    # a "figure" with paragraphs in it is a background image or a page frame: its short lines stay
    paragraph = [Line(0, [Fragment(72, 450 - 12 * i, 10, "Vera", prose.text)]) for i in range(3)]
    label.furniture = None
    mark_figure_text([*paragraph, label], [region])
    assert label.furniture is None


def test_max_pages(generated):
    doc = extract(generated["two_column"].path.read_bytes(), "x.pdf", max_pages=1)
    assert doc.pages == 1


# --- inputs a user can get wrong -----------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("encrypted-rc4-40-userpw.pdf", "encrypted PDF: pass the password with --password"),
    ("not-a-pdf-garbage.pdf", "not a PDF"),
    ("scanned-no-text-ccitt.pdf", "no text layer: OCR it first"),
    ("zero-pages.pdf", "zero pages"),
])
def test_bad_pdfs_are_input_errors(name, message):
    if not (EDGE / name).is_file():
        pytest.skip("edge samples not present")
    with pytest.raises(InputError, match=re.escape(message)):
        extract((EDGE / name).read_bytes(), name)


def test_encrypted_pdf_opens_with_its_password():
    path = EDGE / "encrypted-rc4-40-userpw.pdf"
    if not path.is_file():
        pytest.skip("edge samples not present")
    assert extract(path.read_bytes(), path.name, password="asdfzxcv").body.strip()


def test_damaged_pdf_is_an_input_error(generated):
    data = generated["one_column"].path.read_bytes()
    with pytest.raises(InputError):
        extract(data[: len(data) // 3], "cut.pdf")


def test_text_inputs():
    assert extract(b"  plain  text\n", "a.txt").body == "  plain  text\n"  # verbatim
    with pytest.raises(InputError, match="empty input"):
        extract(b" \n", "a.txt")
    with pytest.raises(InputError, match="not UTF-8"):
        extract(b"\xff\xfe\x00", "a.txt")
    assert detect_kind(b"%PDF-1.5", "x") == "pdf" and detect_kind(b"x", "a.tex") == "tex"


def test_pypdf_is_quiet_unless_verbose(generated, caplog):
    import logging

    extract(generated["one_column"].path.read_bytes(), "x.pdf")
    assert logging.getLogger("pypdf").getEffectiveLevel() > logging.WARNING
    extract(generated["one_column"].path.read_bytes(), "x.pdf", verbose=True)
    assert logging.getLogger("pypdf").getEffectiveLevel() <= logging.WARNING
    extract(generated["one_column"].path.read_bytes(), "x.pdf")


# --- the command ---------------------------------------------------------------------------------

@pytest.fixture
def cli():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # a group, so that "extract" is a subcommand as in the main CLI
        pass

    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, ["extract", *args], env={"COLUMNS": "100"}, **kw)


def test_command_prints_the_model_input(cli, generated):
    result = cli(str(generated["one_column"].path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == to_model_text(extract(generated["one_column"].path.read_bytes(),
                                                          "x.pdf")).text
    assert result.stdout == result.stdout.lower() and result.stderr == ""


def test_command_raw_and_stdin(cli):
    result = cli("--raw", "-", input="The  Raw Text, as given.\n")
    assert result.exit_code == 0 and result.stdout == "The  Raw Text, as given.\n\n"
    normalised_out = cli("-", input="The Text, [3] as given.\n").stdout
    assert normalised_out.strip() == "the text , @xcite as given ."


def test_command_json_parts(cli, generated, tmp_path):
    spec = generated["two_column"]
    result = cli("--format", "json", "--model", str(tmp_path / "no-model"), str(spec.path))
    assert result.exit_code == 0
    parts = json.loads(result.stdout)
    assert parts["title"] == spec.title and parts["sections"] == spec.sections
    assert " ".join(parts["abstract"].split()) == spec.abstract
    assert parts["pages"] == 2 and parts["characters"] == len(parts["body"]) and parts["tokens"] is None
    assert parts["dropped"]["reference lines"] > 0
    assert result.stderr.startswith("tokens not counted") and len(result.stderr.splitlines()) == 1


def test_command_json_counts_tokens(cli, generated, tiny_model_dir):
    result = cli("--format", "json", "--model", str(tiny_model_dir), str(generated["one_column"].path))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] > 10


def test_command_failures_are_one_line_and_exit_1(cli, generated, tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"oops")
    result = cli(str(bad), str(generated["one_column"].path), str(tmp_path / "missing.pdf"))
    assert result.exit_code == 1
    assert result.stdout.strip()  # the good paper is still printed
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "not a PDF" in lines[0] and "cannot read" in lines[1]
    assert "Traceback" not in result.stderr


if __name__ == "__main__":
    suffix = ".tex" if "--tex" in sys.argv else ".pdf"
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or PAPER_NAMES
    if suffix == ".tex":
        names = [n for n in names if tex_body(n) is not None]
    table = {name: figures(name, suffix) for name in names}
    keys = list(next(iter(table.values())))
    print("| figure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(table[n][key]) for n in names) + " |")
