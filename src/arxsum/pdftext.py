"""PDF pages -> positioned text lines in reading order, with page furniture removed.

pypdf hands us text fragments through `visitor_text` with their text matrix, font and size. We
turn them into lines (one baseline, one column), order the lines for one- or two-column pages,
and mark the lines that are page furniture: running headers and footers, page numbers and the
rotated arXiv stamp, and the text drawn inside figures (in a form XObject, or in a region of the
page's own drawings and images: `drawing`). What each remaining line *is* (heading, caption, body) is decided in
`paper.py`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from arxsum.drawing import Drawing, Mark, figure_regions
from arxsum.fontenc import install_tex_maps, tex_encoding

# Font names (after the subset prefix) that only set mathematics: Computer Modern / Latin Modern
# math italic, symbols and extension, AMS symbols, blackboard and script alphabets, and the math
# fonts of the common Times / Palatino packages.
MATH_FONT = re.compile(
    r"^(CMMI|CMBSY|CMSY|CMEX|CMMIB|MSAM|MSBM|EUFM|EUSM|EUEX|EURM|RSFS|LMMath|LMSy|LMEx|"
    r"txmi|txsy|txex|txsym|pxmi|pxsy|pxex|rtxmi|rtxsy|STIXMath|STIX.*Math|CambriaMath|"
    r"MTMI|MTSY|MTEX|Symbol|esint|wasy|bbm|dsrom|stmary|Asana|XITSMath|NewCM.*Math|"
    r"LatinModernMath|TeXGyre.*Math)",
    re.IGNORECASE,
)
BOLD_FONT = re.compile(r"(bold|medi|semibold|black|heavy|demi|CMBX|CMB\d|LMRoman\d+-Bold|-B$|\.B$)",
                       re.IGNORECASE)
ARXIV_STAMP = re.compile(r"^\s*arXiv:\s*\d{4}\.\d{4,5}(v\d+)?\b", re.IGNORECASE)
PAGE_NUMBER = re.compile(r"^\W*(page\s*)?\d{1,4}(\s*(of|/)\s*\d{1,4})?\W*$", re.IGNORECASE)
ABSTRACT_HEAD = re.compile(r"^\s*a\s?bstract\b", re.IGNORECASE)
ABSTRACT_INLINE = re.compile(r"^\s*a\s?bstract\s*[.:—–-]", re.IGNORECASE)  # "Abstract—We ..." (IEEE, LNCS)


def is_abstract_heading(text: str) -> bool:
    """ "Abstract" alone, or starting the abstract's first line ("Abstract. We ..."), not a sentence."""
    text = re.sub(r"^([A-Z]) (?=[A-Z]{2,})", r"\1", text.strip())  # small capitals drawn apart
    return bool(ABSTRACT_HEAD.match(text)) and (len(text.split()) <= 2 or bool(ABSTRACT_INLINE.match(text)))
FOOTNOTE_MARK = re.compile(r"^\s*([0-9]{1,2}|[*†‡§¶]+)\s*$")
MATH_GLUE = re.compile(r"^\s*[0-9()\[\]=+\-−,.:;/|·∗<>ˆˇ˘˙˜¯¨´`]+\s*$")
MIN_SIZE = 2.0  # points; smaller text is not meant to be read
HEADER_BAND = 0.10  # top fraction of the page where running headers live
FOOTER_BAND = 0.10  # bottom fraction of the page where footers and page numbers live
CHAR_WIDTH = 0.45  # average glyph width as a fraction of the font size (estimates line ends)
# TeX's ligature codes (OT1 0x0B-0x0F) that reach us as control characters from fonts we could not
# name: next to a letter they are the ligatures; other control characters are counted and dropped.
LIGATURE_CODES = {"\x0b": "ff", "\x0c": "fi", "\x0d": "fl", "\x0e": "ffi", "\x0f": "ffl"}
LIGATURE_CODE = re.compile(r"(?<=[^\W\d_])[\x0b-\x0f]|[\x0b-\x0f](?=[^\W\d_])")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A form XObject drawn with this much text or more is the page itself wrapped up (some PDF tools
# do that), not an included graphic; the largest plot of the sample papers holds ~130 characters.
FORM_PAGE_TEXT = 3000
# Short lines this close to a figure's region (in ems of their size) are its tick and axis labels:
# pgfplots sets an axis label about 2 ems outside the axes; text is set at least \intextsep away.
LABEL_MARGIN = 2.5
LABEL_WORDS = 6
CAPTION_START = re.compile(r"^(fig(ure)?|table|tab|algorithm)\.?\s*[A-Z]?\d", re.IGNORECASE)
SECTION_START = re.compile(r"^(\d{1,2}(\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+[A-Z][a-z]")
MAX_PROSE_LINES = 3  # a "figure" holding this many prose lines is a background, a frame or a box
PROSE_WORDS = 10  # a line of this many words inside a figure's region is running text, not a label
ROTATED = "rotated text fragments (arXiv stamp)"
CONTROLS = "control characters"
FIGURE_TEXT = "text inside figures"  # a Line.furniture value: counted as "text inside figures lines"


@dataclass
class Fragment:
    """One piece of text drawn at one position with one font."""

    x: float
    y: float  # baseline, PDF user space (origin bottom-left)
    size: float  # effective font size in points
    font: str  # base font name without the subset prefix
    text: str
    form: int | None = None  # which drawing of a form XObject (an included graphic) it is part of

    @property
    def is_math(self) -> bool:
        return bool(MATH_FONT.match(self.font))

    @property
    def est_end(self) -> float:
        """Where the fragment ends, estimated: capitals are about 1.5 times as wide as the rest
        (a small-caps heading's capitals, its smaller capitals)."""
        return self.x + CHAR_WIDTH * self.size * (len(self.text) + 0.5 * sum(c.isupper() for c in self.text))


@dataclass
class Line:
    """Fragments sharing a baseline within one column of one page."""

    page: int
    fragments: list[Fragment] = field(default_factory=list)
    column: int = 0  # 0: left or only column, 1: right column, -1: spans both columns
    furniture: str | None = None  # "header", "footer", "page number", ... when not content

    @property
    def x(self) -> float:
        return self.fragments[0].x

    @property
    def y(self) -> float:
        return self.fragments[0].y

    @property
    def est_end(self) -> float:
        return max(f.est_end for f in self.fragments)

    @property
    def size(self) -> float:
        """Font size that carries most of the line's characters."""
        sizes: Counter[float] = Counter()
        text_fragments = [f for f in self.fragments if not f.is_math] or self.fragments
        for f in text_fragments:
            sizes[round(f.size * 2) / 2] += len(f.text.strip())
        return sizes.most_common(1)[0][0]

    @property
    def bold(self) -> bool:
        chars = sum(len(f.text.strip()) for f in self.fragments)
        bold = sum(len(f.text.strip()) for f in self.fragments if BOLD_FONT.search(f.font))
        return chars > 0 and bold / chars > 0.6

    @property
    def text(self) -> str:
        return line_text(self.fragments)


def line_text(fragments: list[Fragment]) -> str:
    """The line's text, with runs of math glyphs wrapped in `$...$` and `_`/`^` for sub/superscripts."""
    base = fragments[0].y
    base_size = max(f.size for f in fragments)
    flags = _math_flags(fragments, base, base_size)
    out: list[str] = []
    in_math = False
    for frag, math in zip(fragments, flags, strict=True):
        text = frag.text
        shifted = frag.size < 0.85 * base_size and abs(frag.y - base) > 0.1 * base_size
        if not math and shifted and frag.y > base and FOOTNOTE_MARK.match(text):
            continue  # a footnote mark
        if math and not in_math:
            out.append(text[: len(text) - len(text.lstrip())] + "$")
            text = text.lstrip()
        elif not math and in_math:
            out.append("$")
        in_math = math
        if math and shifted:
            text = ("^" if frag.y > base else "_") + text.strip()
        out.append(text)
    if in_math:
        out.append("$")
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _math_flags(fragments: list[Fragment], base: float, base_size: float) -> list[bool]:
    """Which fragments are math: math fonts, a letter carrying a sub- or superscript (bold vectors
    are set in text fonts), then the scripts, accents and operators next to those."""
    shifted = [f.size < 0.85 * base_size and abs(f.y - base) > 0.1 * base_size for f in fragments]
    flags = [f.is_math for f in fragments]
    for i, frag in enumerate(fragments[:-1]):
        if not flags[i] and len(frag.text.strip()) == 1 and frag.text.strip().isalpha() and shifted[i + 1] \
                and not shifted[i]:
            flags[i] = True
    for i, frag in enumerate(fragments):
        if flags[i]:
            continue
        prev_math = i > 0 and flags[i - 1]
        next_math = i + 1 < len(fragments) and flags[i + 1]
        if shifted[i] and prev_math:
            flags[i] = True
        elif (prev_math or next_math) and MATH_GLUE.match(frag.text):
            flags[i] = True
    return flags


def page_fragments(page) -> tuple[list[Fragment], Counter, list[Mark]]:
    """The page's text fragments in content-stream order, counts of what was left out of them
    (rotated fragments, control characters), and the regions its figures cover (`drawing`).

    TeX-encoded fonts that pypdf cannot decode are given their encoding's map first (`fontenc`).
    Text smaller than MIN_SIZE is invisible (the LaTeX source that latexit embeds in figures) and
    is left out, unless nearly all of the page is that small: then its fonts are scaled in a way
    we do not follow (Type3 bitmap fonts of old dvips PDFs) and the sizes are only relative.
    """
    fragments: list[Fragment] = []
    dropped: Counter[str] = Counter()
    install_tex_maps(page)
    forms = FormTracker()
    drawing = Drawing(_xobjects(page))

    def visit(text, cm, tm, font_dict, font_size):
        if not text or not text.strip():
            return
        m = _multiply(tm, cm)
        if abs(m[1]) > 1e-3 or abs(m[2]) > 1e-3 or m[0] <= 0:
            dropped[ROTATED] += 1  # the vertical arXiv stamp, rotated figure labels
            return
        scale = (m[0] ** 2 + m[1] ** 2) ** 0.5
        font = str((font_dict or {}).get("/BaseFont", "")).lstrip("/")
        font = font.split("+", 1)[-1]
        text = text.replace("\n", " ")
        if CONTROL.search(text):
            text = _control_codes(text, font)
        text, controls = CONTROL.subn(" ", text)
        dropped[CONTROLS] += controls
        if text.strip():
            fragments.append(Fragment(m[4], m[5], font_size * scale, font, text, forms.current))

    def before(operator, operands, cm, tm):
        if not forms.stack:  # the page's own operators: a form's are its graphic's
            drawing.before(operator, operands, cm)
        forms.before(operator, operands, cm, tm)

    page.extract_text(visitor_text=visit, visitor_operand_before=before, visitor_operand_after=forms.after)
    in_form: Counter[int] = Counter()
    for f in fragments:
        if f.form is not None:
            in_form[f.form] += len(f.text)
    wrapped = {form for form, chars in in_form.items() if chars >= FORM_PAGE_TEXT}
    for f in fragments:
        if f.form in wrapped:
            f.form = None
    regions = figure_regions(drawing.marks)
    dropped = +dropped  # no zero counts
    visible = [f for f in fragments if f.size >= MIN_SIZE]
    if sum(len(f.text) for f in visible) < 0.1 * sum(len(f.text) for f in fragments):
        return [f for f in fragments if f.size > 0], dropped, regions  # no readable size anywhere: keep all
    return visible, dropped, regions


def _xobjects(page):
    """The page's /XObject resources, or None."""
    try:
        return page["/Resources"].get_object()["/XObject"].get_object()
    except (KeyError, TypeError, AttributeError):
        return None


class FormTracker:
    """Follows pypdf into and out of form XObjects (`Do`), so that each text fragment knows which
    outermost form drawing, if any, it was drawn in.

    pypdf calls `before` for `Do`, then reports the page text it still held, then walks the form's
    own operators (calling `before` for each), then calls `after` for the `Do`: a form is entered
    at its first operator, not at the `Do`.
    """

    def __init__(self) -> None:
        self.stack: list[bool] = []  # per open `Do`: whether its form's operators have started
        self.entering = False
        self.drawings = 0
        self.current: int | None = None

    def before(self, operator, operands, cm, tm) -> None:
        if self.entering:
            self.entering = False
            self.stack[-1] = True
            if sum(self.stack) == 1:
                self.drawings += 1
                self.current = self.drawings
        if operator == b"Do":
            self.stack.append(False)
            self.entering = True

    def after(self, operator, operands, cm, tm) -> None:
        if operator == b"Do" and self.stack:
            self.stack.pop()
            self.entering = False
            if not any(self.stack):
                self.current = None


def _control_codes(text: str, font: str) -> str:
    """Control characters are codes pypdf could not decode: read them in the font's TeX encoding
    where its name gives one, else as OT1's ligatures where they touch a letter."""
    encoding = tex_encoding(font)
    if encoding is not None:
        return CONTROL.sub(lambda c: encoding.get(ord(c.group(0)), c.group(0)), text)
    return LIGATURE_CODE.sub(lambda c: LIGATURE_CODES[c.group(0)], text)


def _multiply(m, n):
    """Product of two PDF matrices given as 6-tuples (a b c d e f)."""
    return (
        m[0] * n[0] + m[1] * n[2],
        m[0] * n[1] + m[1] * n[3],
        m[2] * n[0] + m[3] * n[2],
        m[2] * n[1] + m[3] * n[3],
        m[4] * n[0] + m[5] * n[2] + n[4],
        m[4] * n[1] + m[5] * n[3] + n[5],
    )


def group_lines(fragments: list[Fragment], page: int) -> list[Line]:
    """Consecutive fragments on one baseline (sub- and superscripts included) form a line."""
    lines: list[Line] = []
    current: Line | None = None
    for frag in fragments:
        if current is not None and _continues(current, frag):
            current.fragments.append(frag)
            continue
        current = Line(page=page, fragments=[frag])
        lines.append(current)
    return lines


def _continues(line: Line, frag: Fragment) -> bool:
    last = line.fragments[-1]
    size = max(f.size for f in line.fragments)
    same_baseline = abs(frag.y - line.y) <= 0.55 * size
    moves_right = frag.x >= last.x - 2 * size
    near = frag.x <= last.est_end + 4 * size
    return same_baseline and moves_right and near


def reading_order(lines: list[Line], right_x: float | None, page: int) -> list[Line]:
    """Sort a page's lines: top to bottom, and on two-column pages (`right_x` is where the right
    column starts) left column before right.

    Lines that span both columns (titles, wide abstracts, wide floats) cut the page into bands;
    each band is read left column first.
    """
    if right_x is None or not lines:
        return sorted(lines, key=lambda ln: -ln.y)
    top = front_matter_bottom(lines) if page == 0 else None
    left_x = min(ln.x for ln in lines)
    span_limit = right_x + 0.3 * (right_x - left_x)
    for ln in lines:
        if top is not None and ln.y > top:
            ln.column = -1  # the title block: read top to bottom, left to right
        elif ln.x >= right_x - 6:
            ln.column = 1
        elif ln.est_end > span_limit and ln.furniture != FIGURE_TEXT:  # a figure's labels cut no band
            ln.column = -1
        else:
            ln.column = 0
    ordered: list[Line] = []
    band: list[Line] = []
    for ln in sorted(lines, key=lambda ln: (-round(ln.y), ln.x)):
        if ln.column == -1:
            ordered += _band_order(band)
            ordered.append(ln)
            band = []
        else:
            band.append(ln)
    return ordered + _band_order(band)


def front_matter_bottom(lines: list[Line]) -> float | None:
    """On a first page, the baseline of the abstract's heading: title and authors lie above it."""
    for ln in lines:
        if is_abstract_heading(ln.text):
            return ln.y + 1
    return None


def _band_order(band: list[Line]) -> list[Line]:
    return [ln for ln in band if ln.column == 0] + [ln for ln in band if ln.column == 1]


def right_column_start(lines: list[Line], width: float) -> float | None:
    """The x where a right column starts, when enough lines of text start at one x past the middle."""
    text_lines = [ln for ln in lines if len(ln.text) >= 20] or lines  # not formula pieces or labels
    starts = Counter(round(ln.x) for ln in text_lines if 0.4 * width < ln.x < 0.65 * width)
    if not starts:
        return None
    # the column's left edge: the leftmost frequent start (indented lines start further right)
    top = starts.most_common(1)[0][1]
    x = min(x for x, n in starts.items() if n >= min(top, max(3, 0.3 * top)))
    aligned = sum(1 for ln in text_lines if x - 2 <= ln.x <= x + 25)
    if aligned < 8 or aligned < 0.2 * len(text_lines):
        return None
    return float(x)


def mark_furniture(pages: list[list[Line]], heights: list[float]) -> None:
    """Mark running headers/footers (repeated across pages), page numbers and arXiv stamps."""
    seen: Counter[str] = Counter()
    for lines, height in zip(pages, heights, strict=True):
        for sig in {_signature(ln) for ln in lines if _in_band(ln, height) and not ln.furniture}:
            seen[sig] += 1
    repeated = max(2, round(0.25 * len(pages)))
    for lines, height in zip(pages, heights, strict=True):
        extremes = _top_and_bottom(lines)
        for ln in lines:
            text = ln.text
            if ln.furniture:
                continue  # already known: text inside a figure
            if ARXIV_STAMP.match(text):
                ln.furniture = "arxiv stamp"
            elif (_in_band(ln, height) or id(ln) in extremes) and PAGE_NUMBER.match(text):
                ln.furniture = "page number"
            elif _in_band(ln, height) and seen[_signature(ln)] >= repeated:
                ln.furniture = "header" if ln.y > height / 2 else "footer"


def _top_and_bottom(lines: list[Line]) -> set[int]:
    """The page's highest and lowest lines (where page numbers sit, whatever the margins)."""
    if not lines:
        return set()
    top = max(ln.y for ln in lines)
    bottom = min(ln.y for ln in lines)
    return {id(ln) for ln in lines if ln.y in (top, bottom)}


def _in_band(line: Line, height: float) -> bool:
    return line.y > (1 - HEADER_BAND) * height or line.y < FOOTER_BAND * height


def _signature(line: Line) -> str:
    """A line's text with digits and spacing ignored, to spot the same header on every page."""
    return re.sub(r"[\d\s]+", "#", line.text.lower())


def read_lines(reader, limit: int) -> tuple[list[Line], Counter, int]:
    """The lines of the first `limit` pages in reading order (furniture marked), counts of what was
    left out of the fragments, and how many pages could not be read (damaged content streams)."""
    pages: list[list[Line]] = []
    heights: list[float] = []
    widths: list[float] = []
    dropped: Counter[str] = Counter()
    unreadable = 0
    for i in range(limit):
        page = reader.pages[i]
        try:
            fragments, skipped, regions = page_fragments(page)
        except Exception:  # noqa: BLE001 - pypdf fails in many ways on a damaged page; skip it
            unreadable += 1
            continue
        dropped += skipped
        pages.append(mark_figure_text(group_lines(fragments, page=i), regions))
        heights.append(float(page.mediabox.top))
        widths.append(float(page.mediabox.width))
    columns = column_starts(pages, widths)
    pages = [reading_order(lines, x, lines[0].page if lines else 0) for lines, x in zip(pages, columns, strict=True)]
    mark_furniture(pages, heights)
    return [ln for lines in pages for ln in lines], dropped, unreadable


def mark_figure_text(lines: list[Line], regions: list[Mark] | None = None) -> list[Line]:
    """Lines drawn (mostly) inside an included graphic, or inside the region of a figure drawn on
    the page itself, are its labels, ticks and legends; so are short label-like lines just around
    such a region (tick and axis labels sit outside the axes). A line of prose inside a region
    stays: a paragraph beside a drawing's edge, a diagram's long sentence."""
    regions = [r for r in regions or [] if not _holds_prose(r, lines)]
    for ln in lines:
        chars = sum(len(f.text.strip()) for f in ln.fragments)
        inside = sum(len(f.text.strip()) for f in ln.fragments if f.form is not None)
        if not chars:
            continue
        if inside > 0.5 * chars or regions and _in_figure_region(ln, regions, chars):
            ln.furniture = FIGURE_TEXT
    return lines


def _holds_prose(region: Mark, lines: list[Line]) -> bool:
    """A region with several lines of prose in it is a page's background, frame or colored box
    (an image behind the text, a drawn page border), not a figure."""
    prose = 0
    for ln in lines:
        if _prose_line(ln) and region.holds(ln.x, ln.y, 1.0):
            prose += 1
            if prose >= MAX_PROSE_LINES:
                return True
    return False


def _in_figure_region(line: Line, regions: list[Mark], chars: int) -> bool:
    if _prose_line(line):
        return False
    if _in_regions(line, regions, 1.0) > 0.5 * chars:
        return True
    return _label_like(line) and _in_regions(line, regions, LABEL_MARGIN * line.size) > 0.5 * chars


def _in_regions(line: Line, regions: list[Mark], margin: float) -> int:
    """How many of the line's characters are drawn inside one of the regions, grown by `margin`."""
    return sum(len(f.text.strip()) for f in line.fragments
               if any(r.holds(f.x, f.y, margin) and r.holds(f.est_end, f.y, margin) for r in regions))


def _prose_line(line: Line) -> bool:
    return len(re.findall(r"[^\W\d_]{2,}", line.text)) >= PROSE_WORDS


def _label_like(line: Line) -> bool:
    """A tick, axis label or legend: a few words that end no sentence and start no caption or
    section (a heading set right after a figure)."""
    text = line.text.strip()
    return len(text.split()) <= LABEL_WORDS and not text.endswith((".", ":", ";", ",", "?", "!")) \
        and not CAPTION_START.match(text) and not SECTION_START.match(text) and not line.bold


def column_starts(pages: list[list[Line]], widths: list[float]) -> list[float | None]:
    """Each page's right-column start; a page with too few lines to tell (the last page of a
    two-column paper) takes the paper's, if some of its lines start there."""
    pages = [[ln for ln in lines if not ln.furniture] for lines in pages]
    found = [right_column_start(lines, w) for lines, w in zip(pages, widths, strict=True)]
    common = Counter(round(x) for x in found if x is not None).most_common(1)
    if not common:
        return found
    x = float(common[0][0])
    return [f if f is not None or not _fits_columns(lines, x) else x for f, lines in zip(found, pages, strict=True)]


def _fits_columns(lines: list[Line], right_x: float) -> bool:
    """Some lines start at the right column and (almost) none of the others runs across it."""
    starts = sum(abs(ln.x - right_x) <= 3 for ln in lines)
    across = sum(ln.x < right_x - 6 and ln.est_end > right_x + 30 for ln in lines)
    return starts >= 3 and across <= 2
