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


def _opening(c) -> float:
    """A one-column first page down to the introduction's heading: running furniture, title block,
    abstract; the y where the introduction's text starts."""
    _furniture(c, 1)
    y = _title_block(c, HEIGHT - 100)
    c.setFont("Vera-Bold", 11)
    c.drawCentredString(WIDTH / 2, y, "Abstract")
    y = _lines(c, ABSTRACT, 110, y - 18, 9, leading=11) - 20
    return _lines(c, ["1 Introduction"], 72, y, 12, "Vera-Bold") - 6


def one_column(path: Path) -> PaperSpec:
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    y = _opening(c)
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


HYPHEN_LINES = [
    "Along the line-of-sight the semi-amplitude is small, unlike",
    "before; the line-of-",
    "sight speed and the semi-",
    "amplitude are independent of the un-",
    "like cases, which are in-",
    "dependent of the inter-",
    "action, and the co-",
    "operation or cooperation or co-operation shows on the x-",
    "axis that the negative-",
    "energy orbits and the energy stay.",
]
# what the paper shows: each joined or kept as the paper's own words (or TeX's limits) say
HYPHEN_TEXT = ("Along the line-of-sight the semi-amplitude is small, unlike before; the line-of-sight speed "
               "and the semi-amplitude are independent of the unlike cases, which are independent of the "
               "interaction, and the co-operation or cooperation or co-operation shows on the x-axis that the "
               "negative-energy orbits and the energy stay.")


def hyphens(path: Path) -> PaperSpec:
    """Line-end hyphens that only the paper's own words decide."""
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    y = _title_block(c, HEIGHT - 100)
    c.setFont("Vera-Bold", 11)
    c.drawCentredString(WIDTH / 2, y, "Abstract")
    y = _lines(c, ABSTRACT, 110, y - 18, 9, leading=11) - 20
    y = _lines(c, ["1 Introduction"], 72, y, 12, "Vera-Bold") - 6
    y = _lines(c, HYPHEN_LINES, 72, y) - 16
    _references(c, 72, y)
    c.showPage()
    c.save()
    return PaperSpec(path, sections=["1 Introduction"], body=HYPHEN_TEXT)


FIGURE_BEFORE = [
    "The first lines of this paragraph run on as usual, and the shift of the",
    "lines in the spectrum is large enough that it can only be ac-",
]
FIGURE_AFTER = [
    "counted for by the Doppler effect of the moving source, which we then",
]
PAGE_TWO = ["take up in the second part of the paper, as the text goes on.",
            "A new paragraph starts here and ends here."]
FIGURE_LABELS = ["angular separation [arcsec]", "mean response length (tokens)", "number of counts per bin"]
FIGURE_TEXT = ("The first lines of this paragraph run on as usual, and the shift of the lines in the spectrum "
               "is large enough that it can only be accounted for by the Doppler effect of the moving source, "
               "which we then take up in the second part of the paper, as the text goes on. "
               "A new paragraph starts here and ends here.")


def _plot(c: canvas.Canvas, name: str) -> None:
    """A vector plot as an included graphic: a form XObject with a frame, a curve, ticks and labels."""
    c.beginForm(name)
    c.rect(40, 30, 300, 110)
    c.bezier(40, 40, 120, 160, 220, 20, 340, 120)
    c.setFont("Vera", 10)  # labels at the body's size: only where they are drawn tells them apart
    for i, tick in enumerate(["0", "10", "20", "30"]):
        c.drawString(40 + 100 * i, 18, tick)
    c.drawCentredString(190, 4, FIGURE_LABELS[0])
    for i in range(4):  # a legend per panel, as plotting libraries repeat it
        c.drawString(60 + 70 * (i % 2), 120 - 12 * i, FIGURE_LABELS[1] if i % 2 == 0 else "model A")
    c.drawString(200, 60, FIGURE_LABELS[2])
    c.endForm()


def figure_text(path: Path) -> PaperSpec:
    """A plot (a form XObject, as \\includegraphics of a PDF makes) drawn inside a sentence, with
    the word before it hyphenated; the sentence then goes on across a page break."""
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    y = _opening(c)
    y = _lines(c, FIGURE_BEFORE, 72, y) - 6
    _plot(c, "plot1")
    c.saveState()
    c.translate(110, y - 150)
    c.doForm("plot1")
    c.restoreState()
    y = _lines(c, ["Figure 1: The plot, which the body does not read."], 72, y - 168, 9) - 18
    _lines(c, FIGURE_AFTER, 72, y)
    c.showPage()
    _furniture(c, 2)
    y = _lines(c, PAGE_TWO, 72, HEIGHT - 90) - 16
    _references(c, 72, y)
    c.showPage()
    c.save()
    return PaperSpec(path, sections=["1 Introduction"], body=FIGURE_TEXT,
                     noise=[*FIGURE_LABELS, "model A", "plot, which", "cited work"])


DRAWN_BEFORE = [
    "The second paragraph runs on as usual, and the shift of the lines in the",
    "spectrum is large enough that it can only be ac-",
]
DRAWN_AFTER = ["counted for by the Doppler effect of the source, which we take up next."]
DRAWN_LABELS = ["angular separation [arcsec]", "mean response length (tokens)", "model B"]
FRAMED = ["Theorem 1. Every line of prose set inside a frame or between", "the rules of a box stays in the body."]
RULED = ["The steps set between the rules of an algorithm box stay", "in the body as well, and so does"]
UNDERLINED = "this underlined line of running text."
DRAWN_TEXT = ("The second paragraph runs on as usual, and the shift of the lines in the spectrum is large "
              "enough that it can only be accounted for by the Doppler effect of the source, which we take up "
              "next. " + " ".join(FRAMED) + " " + " ".join(RULED) + " " + UNDERLINED)


def _drawn_plot(c: canvas.Canvas, x: float, y: float) -> None:
    """A plot drawn straight into the page (as TikZ/pgfplots and EPS figures are): an axes frame,
    ticks, a curve of short strokes, markers, a legend with its swatch, and labels at the body's
    size set where pgfplots sets them: tick labels below the axes, the axis label 2 ems under them."""
    width, height = 300, 110
    c.rect(x, y, width, height)
    for i in range(7):  # ticks on both axes
        c.line(x + 50 * i, y, x + 50 * i, y + 4)
        c.line(x, y + 18 * i, x + 4, y + 18 * i)
    points = [(x + 5 * i, y + 55 + 40 * ((i % 12) / 12 - 0.5)) for i in range(60)]
    path = c.beginPath()
    path.moveTo(*points[0])
    for p in points[1:]:
        path.lineTo(*p)
    c.drawPath(path)
    for px, py in points[::10]:  # markers
        c.circle(px, py, 1.5, fill=1)
    c.line(x + 150, y + 95, x + 170, y + 95)  # the legend's swatch
    c.setFont("Vera", 10)
    for i, tick in enumerate(["0", "10", "20", "30"]):
        c.drawString(x - 3 + 100 * i, y - 11, tick)
    c.drawCentredString(x + width / 2, y - 24, DRAWN_LABELS[0])
    c.drawString(x + 175, y + 92, DRAWN_LABELS[1])
    c.drawString(x + 175, y + 80, DRAWN_LABELS[2])


def figure_drawn(path: Path) -> PaperSpec:
    """A vector plot drawn with path operators in the page's own content (no form XObject) inside
    a sentence whose word before it is hyphenated; then prose that drawings must not take away:
    a framed theorem (a rounded box), an algorithm box (rules above, between and below), a rule
    above a paragraph and an underlined line."""
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    y = _opening(c)
    y = _lines(c, DRAWN_BEFORE, 72, y) - 46
    _drawn_plot(c, 110, y - 110)
    y = _lines(c, ["Figure 1: A plot drawn on the page, which the body does not read."], 72, y - 148, 9) - 18
    y = _lines(c, DRAWN_AFTER, 72, y) - 14
    c.roundRect(66, y - 18, 480, 30, 6)
    y = _lines(c, FRAMED, 72, y) - 14
    for dy in (12, 0, -28):  # an algorithm box's rules
        c.line(66, y + dy, 546, y + dy)
    y = _lines(c, RULED, 72, y - 10)
    c.line(72, y - 2, 252, y - 2)  # an underline
    _lines(c, [UNDERLINED], 72, y)
    c.showPage()
    _furniture(c, 2)
    y = _lines(c, ["A last paragraph ends the paper here."], 72, HEIGHT - 90) - 16
    _references(c, 72, y)
    c.showPage()
    c.save()
    return PaperSpec(path, sections=["1 Introduction"], body=DRAWN_TEXT + " A last paragraph ends the paper here.",
                     noise=[*DRAWN_LABELS, "drawn on the page", "cited work"])


def build_all(directory: Path) -> dict[str, PaperSpec]:
    return {"one_column": one_column(directory / "one-column.pdf"),
            "two_column": two_column(directory / "two-column.pdf"),
            "ieee_like": ieee_like(directory / "ieee-like.pdf"),
            "tex_fonts": tex_fonts(directory / "tex-fonts.pdf"),
            "hyphens": hyphens(directory / "hyphens.pdf"),
            "figure_text": figure_text(directory / "figure-text.pdf"),
            "figure_drawn": figure_drawn(directory / "figure-drawn.pdf")}


# --- PDFs written by hand: fonts as old TeX PDFs have them ---------------------------------------

OT1_CODES = [("ffi", 0x0E), ("ffl", 0x0F), ("ff", 0x0B), ("fi", 0x0C), ("fl", 0x0D), ("“", 0x5C), ("”", 0x22),
             ("–", 0x7B), ("—", 0x7C), ("ß", 0x19), ("æ", 0x1A), ("’", 0x27)]
T1_CODES = [("ffi", 0x1E), ("ffl", 0x1F), ("ff", 0x1B), ("fi", 0x1C), ("fl", 0x1D), ("“", 0x10), ("”", 0x11),
            ("–", 0x15), ("—", 0x16), ("Ł", 0x8A), ("ó", 0xF3), ("ź", 0xB9), ("ß", 0xFF), ("-", 0x7F), ("’", 0x27)]


def tex_encode(text: str, codes: list[tuple[str, int]]) -> bytes:
    """Text in a TeX font's own codes (ligatures, quotes and dashes where OT1 or T1 puts them)."""
    out = bytearray()
    i = 0
    while i < len(text):
        for chars, code in codes:
            if text.startswith(chars, i):
                out.append(code)
                i += len(chars)
                break
        else:
            out += text[i].encode("latin-1")
            i += 1
    return bytes(out)


def pdf_string(data: bytes) -> bytes:
    return b"(" + b"".join(bytes([c]) if 0x20 <= c < 0x7F and c not in b"()\\" else b"\\%03o" % c
                           for c in data) + b")"


@dataclass
class RawLine:
    font: str  # resource name
    size: float
    x: float
    y: float
    text: str
    codes: list[tuple[str, int]] = field(default_factory=lambda: OT1_CODES)


def raw_pdf(path: Path, pages: list[list[RawLine]], fonts: dict[str, bytes], extra: list[bytes] | None = None,
            drawings: list[bytes] | None = None) -> None:
    """A PDF with Type 1 font dictionaries as given (`fonts`: resource name -> dictionary body)
    and each line drawn as TeX draws it: one TJ of words set apart by kerns, no space glyphs.
    `extra` objects are appended after the fonts (numbered on from them); `drawings[i]` is put
    before page i's text."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    font_ids = {}
    for name, body in fonts.items():
        objects.append(body)
        font_ids[name] = len(objects)
    objects += extra or []
    kids = []
    for i, lines in enumerate(pages):
        ops = [drawings[i]] if drawings and i < len(drawings) else []
        for ln in lines:
            words = [pdf_string(tex_encode(w, ln.codes)) for w in ln.text.split(" ")]
            ops.append(b"BT /%s %g Tf 1 0 0 1 %g %g Tm [%s] TJ ET" % (ln.font.encode(), ln.size, ln.x, ln.y,
                                                                     b" -333 ".join(words)))
        content = b"\n".join(ops)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        font_res = b" ".join(b"/%s %d 0 R" % (n.encode(), k) for n, k in font_ids.items())
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << %s >> %s>> >>" % (len(objects), font_res, RESOURCES_EXTRA.get(path, b"")))
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


RESOURCES_EXTRA: dict[Path, bytes] = {}  # a path's extra page resources (its XObjects)


def type1_font(base: str, descriptor: bytes = b"") -> bytes:
    """A Type 1 font dictionary with widths and no /Encoding and no /ToUnicode: what pypdf reads
    with StandardEncoding unless it can read the font program (`descriptor` may embed one)."""
    widths = b" ".join([b"500"] * 256)
    return (b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /FirstChar 0 /LastChar 255 /Widths [%s] %s>>"
            % (base.encode(), widths, descriptor))


TEX_TITLE = "Old Fonts Without Maps"
TEX_ABSTRACT = "We read a paper whose fonts name their encoding only."
TEX_INTRO = [
    "The first results of this finite model are significant: the efficient",
    "flow of “small” filters differs—as shown—from the 10–20 offline",
    "cases, and the specific fluffy affine figures follow.",
]
TEX_RESULTS_T1 = [
    "In the second section the fluid’s “effective” field of Łódź and",
    "Straße—affine—stays fine, and the compu-",
    "tation of the official figures is first.",
]
TEX_CODE_LINE = "The typewriter call"  # followed by a CMTT10 fragment `f{x|y}` on the same line
# a font with a name that says nothing: its ligature codes next to letters still read as ligatures,
# and a stray control character is counted in `dropped`
TEX_UNNAMED = "An unnamed font gives the final \x01 offer."


def tex_fonts(path: Path) -> PaperSpec:
    """A one-column paper set in Computer Modern (OT1), cm-super (T1) and CM typewriter fonts
    that carry no /Encoding, no /ToUnicode and no font program: only their names tell."""
    fonts = {"F1": type1_font("ABCDEF+CMR10"), "F2": type1_font("ABCDEF+CMBX12"),
             "F3": type1_font("ABCDEF+CMR17"), "F4": type1_font("ABCDEF+CMR9"),
             "F5": type1_font("ABCDEF+SFRM1000"), "F6": type1_font("ABCDEF+CMTT10"),
             "F7": type1_font("ABCDEF+PaperRoman")}
    t1 = T1_CODES
    page1 = [RawLine("F3", 17, 200, 700, TEX_TITLE), RawLine("F1", 12, 240, 672, "Ada Lovelace"),
             RawLine("F2", 10, 280, 630, "Abstract"), RawLine("F4", 9, 110, 614, TEX_ABSTRACT),
             RawLine("F2", 12, 72, 580, "1 Introduction")]
    page1 += [RawLine("F1", 10, 72, 560 - 12.5 * i, t) for i, t in enumerate(TEX_INTRO)]
    page1.append(RawLine("F1", 10, 300, 40, "1"))
    page2 = [RawLine("F2", 12, 72, 720, "2 Results")]
    page2 += [RawLine("F5", 10, 72, 700 - 12.5 * i, t, t1) for i, t in enumerate(TEX_RESULTS_T1)]
    page2 += [RawLine("F1", 10, 72, 662.5, TEX_CODE_LINE), RawLine("F6", 10, 180, 662.5, "f{x|y}"),
              RawLine("F1", 10, 72, 650, "returns a value."), RawLine("F7", 10, 72, 630, TEX_UNNAMED)]
    page2 += [RawLine("F2", 12, 72, 610, "References"), RawLine("F4", 9, 72, 594, REFERENCE),
              RawLine("F1", 10, 300, 40, "2")]
    raw_pdf(path, [page1, page2], fonts)
    body = " ".join(TEX_INTRO) + " " + " ".join(TEX_RESULTS_T1).replace("compu- tation", "computation") \
        + " " + TEX_CODE_LINE + " f{x|y} returns a value. " + " ".join(TEX_UNNAMED.replace("\x01", "").split())
    return PaperSpec(path, title=TEX_TITLE, abstract=TEX_ABSTRACT, sections=["1 Introduction", "2 Results"],
                     body=body, noise=["cited work", "Ada Lovelace", "paper whose"])


# --- a long paper: many pages of running text, for reading only the pages the model needs ---------

LONG_WORDS = ("model data layer attention token paper result method training sequence summary document "
              "encoder decoder window block global local memory sparse dense length input output beam "
              "search score metric corpus section figure table value weight gradient optimizer batch "
              "experiment baseline transformer representation abstract structure").split()
LONG_BREAKS = [("repre", "sentation"), ("opti", "mizer"), ("experi", "ment"), ("trans", "former"),
               ("well", "known"), ("struc", "ture"), ("self", "attention"), ("long", "range")]


def long_paper(path: Path, pages: int = 40) -> PaperSpec:
    """A one-column paper of `pages` pages: the opening page, numbered sections of running text
    (46 lines a page, running header and page number), words broken at line ends (TeX's breaks and
    compounds such as "self-attention", also written whole elsewhere), references at the end.
    The words come from a fixed generator, so the same call draws the same PDF."""
    import random

    _fonts()
    rng = random.Random(7)
    c = canvas.Canvas(str(path), pagesize=letter)
    y = _opening(c)
    line_no = 0
    section = 1
    for page in range(1, pages + 1):
        if page > 1:
            _furniture(c, page)
            y = HEIGHT - 90
        while y > 90:
            if line_no and line_no % 60 == 0 and section * 60 <= line_no:  # a new section every 60 lines
                section += 1
                y = _lines(c, [f"{section} Section Number {section}"], 72, y - 6, 12, "Vera-Bold") - 6
                continue
            words = [rng.choice(LONG_WORDS) for _ in range(rng.randint(9, 12))]
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), "-".join(rng.choice(LONG_BREAKS)))
            text = " ".join(words)
            if line_no % 7 == 3:  # a word broken at the line end
                first, _second = rng.choice(LONG_BREAKS)
                text += f" {first}-"
            elif line_no % 7 == 4:
                text = f"{LONG_BREAKS[line_no % len(LONG_BREAKS)][1]} {text}"
            if line_no % 13 == 12:
                text += "."
            y = _lines(c, [text], 72, y)
            line_no += 1
        c.showPage()
    _furniture(c, pages + 1)
    _references(c, 72, HEIGHT - 90)
    c.showPage()
    c.save()
    return PaperSpec(path, sections=[], body="")


MODEL_WORD_LINES = [
    "The response of the circuit is non-",
    "linear at high drive, which the measurements below make plain.",
]


def model_word_hyphen(path: Path) -> PaperSpec:
    """A line-end hyphen ("non-" / "linear") that the paper's own words do not decide: no other
    form of the word is written, and "non" starts many compounds, so without the model's vocabulary
    the hyphen stays; with a vocabulary holding "nonlinear" it goes."""
    _fonts()
    c = canvas.Canvas(str(path), pagesize=letter)
    y = _opening(c)
    y = _lines(c, MODEL_WORD_LINES, 72, y) - 16
    _references(c, 72, y)
    c.showPage()
    c.save()
    return PaperSpec(path, sections=["1 Introduction"],
                     body="The response of the circuit is nonlinear at high drive, which the measurements "
                          "below make plain.")
