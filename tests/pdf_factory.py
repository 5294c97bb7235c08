"""PDFs with known text, drawn with reportlab, for the extraction tests.

Each paper has a title block, an abstract, numbered sections, a caption, a footnote, running
headers and page numbers, the rotated arXiv stamp, a references list and an appendix after it.
The body lines are set by hand so that line-end hyphens (`op-`/`posite`, `well-`/`known`) and the
`fi` ligature (U+FB01, in Bitstream Vera which ships with reportlab) land where the tests expect.
The two-column paper draws its right column before its left one, so only geometry gives the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import reportlab
from reportlab.lib.pagesizes import letter
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

FONTS = Path(reportlab.__file__).parent / "fonts"
WIDTH, HEIGHT = letter
HEADER = "Preprint under review: A Test Paper"
STAMP = "arXiv:2101.00001v1 [cs.CL] 1 Jan 2021"
TITLE = "A Test Paper on Reading Order"
ABSTRACT = ["We study how text is read from generated documents.", "The abstract must stay out of the body."]
CAPTION = "Figure 1: A caption that must not appear in the body."
FOOTNOTE = "1 A footnote that must not appear in the body."
REFERENCE = "[1] A. Author. A cited work whose title must not appear. 2020."
APPENDIX = "The appendix text is left out unless asked for."

# each paragraph: lines as they are set; the expected text joins them
INTRO = [
    "The first paragraph opens the body of the paper and is written in",
    "plain words so that a test can check it. The \ufb01rst \ufb01gure shows the op-",
    "posite case, which is a well-",
    "known problem in layout analysis [1].",
]
INTRO_TEXT = ("The first paragraph opens the body of the paper and is written in plain words so that a test "
              "can check it. The first figure shows the opposite case, which is a well-known problem in "
              "layout analysis [1].")
METHOD = [
    "Our method reads the page from top to bottom and from the left",
    "column to the right column, as people do.",
]
METHOD_TEXT = ("Our method reads the page from top to bottom and from the left column to the right column, "
               "as people do.")
RESULTS = [
    "The results show that every line comes back in order and",
    "that nothing from the margins gets into the text.",
]
OUTLOOK = ["The last page has", "few lines in its", "left column and", "a few in the right", "one, read after", "the left ones."]
RESULTS_TEXT = "The results show that every line comes back in order and that nothing from the margins gets into the text."


@dataclass
class PaperSpec:
    path: Path
    title: str = TITLE
    abstract: str = " ".join(ABSTRACT)
    sections: list[str] = field(default_factory=lambda: ["1 Introduction", "2 Method", "3 Results"])
    body: str = " ".join([INTRO_TEXT, METHOD_TEXT, RESULTS_TEXT])
    appendix: str = APPENDIX
    noise: list[str] = field(default_factory=lambda: [HEADER, "arXiv:", "caption", "footnote",
                                                      "cited work", "Ada Lovelace", "abstract must"])


def _fonts() -> None:
    pdfmetrics.registerFont(TTFont("Vera", str(FONTS / "Vera.ttf")))
    pdfmetrics.registerFont(TTFont("Vera-Bold", str(FONTS / "VeraBd.ttf")))


def _lines(c: canvas.Canvas, lines: list[str], x: float, y: float, size: float = 10,
           font: str = "Vera", leading: float = 12.5) -> float:
    c.setFont(font, size)
    for line in lines:
        c.drawString(x, y, line)
        y -= leading
    return y


def _furniture(c: canvas.Canvas, number: int) -> None:
    c.setFont("Vera", 8)
    c.drawString(72, HEIGHT - 40, HEADER)
    c.drawCentredString(WIDTH / 2, 36, str(number))
    if number == 1:
        c.saveState()
        c.translate(30, 250)
        c.rotate(90)
        c.setFont("Vera", 14)
        c.drawString(0, 0, STAMP)
        c.restoreState()


def _title_block(c: canvas.Canvas, top: float) -> float:
    c.setFont("Vera-Bold", 16)
    c.drawCentredString(WIDTH / 2, top, TITLE)
    c.setFont("Vera", 11)
    c.drawCentredString(WIDTH / 2, top - 24, "Ada Lovelace and Alan Turing")
    c.drawCentredString(WIDTH / 2, top - 38, "Analytical Engine Institute")
    return top - 70


def _references(c: canvas.Canvas, x: float, y: float) -> float:
    y = _lines(c, ["References"], x, y, 12, "Vera-Bold") - 4
    y = _lines(c, [REFERENCE], x, y, 9) - 14
    y = _lines(c, ["A Appendix Proofs"], x, y, 12, "Vera-Bold") - 4
    return _lines(c, [APPENDIX], x, y)


def one_column(path: Path) -> PaperSpec:
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    _furniture(c, 1)
    y = _title_block(c, HEIGHT - 100)
    c.setFont("Vera-Bold", 11)
    c.drawCentredString(WIDTH / 2, y, "Abstract")
    y = _lines(c, ABSTRACT, 110, y - 18, 9, leading=11) - 20
    y = _lines(c, ["1 Introduction"], 72, y, 12, "Vera-Bold") - 6
    y = _lines(c, INTRO, 72, y) - 24
    y = _lines(c, [CAPTION], 72, y, 9) - 24
    _lines(c, [FOOTNOTE], 72, 80, 8)
    c.showPage()
    _furniture(c, 2)
    y = HEIGHT - 90
    y = _lines(c, ["2 Method"], 72, y, 12, "Vera-Bold") - 6
    y = _lines(c, METHOD, 72, y) - 16
    y = _lines(c, ["3 Results"], 72, y, 12, "Vera-Bold") - 6
    y = _lines(c, RESULTS, 72, y) - 16
    _references(c, 72, y)
    c.showPage()
    c.save()
    return PaperSpec(path)


def two_column(path: Path) -> PaperSpec:
    """Title across the page; abstract and sections in two columns; the right column drawn first."""
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    left, right = 54, 318
    words_per_line = 5

    def wrap(text: str) -> list[str]:
        w = text.split()
        return [" ".join(w[i:i + words_per_line]) for i in range(0, len(w), words_per_line)]

    _furniture(c, 1)
    top = _title_block(c, HEIGHT - 90)
    # right column first: the method and results sections
    y = _lines(c, ["2 Method"], right, top, 12, "Vera-Bold") - 6
    y = _lines(c, wrap(METHOD_TEXT), right, y) - 16
    y = _lines(c, ["3 Results"], right, y, 12, "Vera-Bold") - 6
    _lines(c, wrap(RESULTS_TEXT), right, y)
    # then the left column: abstract and introduction
    c.setFont("Vera-Bold", 11)
    c.drawCentredString(left + 120, top, "Abstract")
    y = _lines(c, wrap(" ".join(ABSTRACT)), left + 10, top - 18, 9, leading=11) - 20
    y = _lines(c, ["1 Introduction"], left, y, 12, "Vera-Bold") - 6
    intro = wrap(INTRO_TEXT.replace("first figure", "\ufb01rst \ufb01gure"))
    y = _lines(c, intro, left, y) - 24
    _lines(c, [CAPTION[:40], CAPTION[40:]], left, y, 9, leading=10)
    _lines(c, [FOOTNOTE], left, 80, 8)
    c.showPage()
    # a last page too short to show its columns by itself: right column first again
    _furniture(c, 2)
    y = _lines(c, OUTLOOK[3:], right, HEIGHT - 90) - 14
    _references(c, right, y)
    y = _lines(c, ["4 Outlook"], left, HEIGHT - 90, 12, "Vera-Bold") - 6
    _lines(c, OUTLOOK[:3], left, y)
    c.showPage()
    c.save()
    return PaperSpec(path, sections=["1 Introduction", "2 Method", "3 Results", "4 Outlook"],
                     body=" ".join([INTRO_TEXT, METHOD_TEXT, RESULTS_TEXT, " ".join(OUTLOOK)]))


IEEE_LEFT = [
    "Transactions papers put the abstract in the",
    "left column, after a run-in heading, and",
    "some more words fill the left column so that",
    "the columns are long enough to be seen, and",
    "the lines go on and on in plain running text",
    "until the foot of the column is reached, and",
    "a reader goes on reading at the other side;",
    "they number their sections with Roman numer-",
]
IEEE_RIGHT = [
    "als. A word cut at the foot of the left",
    "column goes on at the top of the right one,",
    "as in the work of Smith et al. (2019). These",
    "lines are more words in the right column,",
    "all in running text like the rest of it, and",
    "they are here to make the right column long",
    "enough to be found by the reader of columns",
    "before the references of the paper begin.",
]


def ieee_like(path: Path) -> PaperSpec:
    """Two columns, an inline "Abstract\u2014", a Roman section number in capitals, small-caps
    REFERENCES (a capital and smaller capitals, two pieces), a word hyphenated across the columns."""
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    left, right = 54, 318
    top = _title_block(c, HEIGHT - 90)
    y = _lines(c, IEEE_RIGHT, right, top) - 10  # the right column first again
    c.setFont("Vera", 10)
    c.drawString(right + 60, y, "R")
    c.setFont("Vera", 8)
    c.drawString(right + 67, y, "EFERENCES")
    _lines(c, [REFERENCE[:40], REFERENCE[40:]], right, y - 16, 8, leading=9.5)
    c.setFont("Vera-Bold", 9)
    c.drawString(left, top, "Abstract\u2014" + ABSTRACT[0])
    y = _lines(c, [ABSTRACT[1]], left, top - 11, 9, "Vera-Bold", 11)
    y = _lines(c, ["Index Terms\u2014layout, reading order."], left, y - 4, 9, "Vera-Bold") - 14
    c.setFont("Vera", 10)
    c.drawCentredString(left + 120, y, "I. INTRODUCTION")
    _lines(c, IEEE_LEFT, left, y - 18)
    c.setFont("Vera", 10)
    c.drawCentredString(WIDTH / 2, 36, "1")
    c.showPage()
    c.save()
    text = " ".join(IEEE_LEFT + IEEE_RIGHT).replace("numer- als.", "numerals.")
    return PaperSpec(path, sections=["I. INTRODUCTION"], body=text,
                     noise=["Index Terms", "cited work", "Ada Lovelace", "abstract must"])


def build_all(directory: Path) -> dict[str, PaperSpec]:
    return {"one_column": one_column(directory / "one-column.pdf"),
            "two_column": two_column(directory / "two-column.pdf"),
            "ieee_like": ieee_like(directory / "ieee-like.pdf")}
