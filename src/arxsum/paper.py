"""Lines of a paper in reading order -> its parts: title, abstract, sections, body, references.

The model input is the body: from the first section heading after the abstract up to the
references, without headings, captions, footnotes and other small print. Appendices after the
references are left out unless asked for.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from arxsum.pdftext import ABSTRACT_HEAD, BOLD_FONT, Line, is_abstract_heading

HEADING_NUMBER = re.compile(r"^(\d{1,2}(\.\d{1,2})*\.?|[IVX]{1,5}\.|[A-H](\.\d{1,2})*\.?)\s+(?=[A-Z])")
HEADING_WORDS = re.compile(
    r"^(abstract|references|bibliography|acknowledge?ments?|appendix|appendices|introduction|"
    r"conclusions?|related work|discussion|summary|background|methods?|results)\b",
    re.IGNORECASE,
)
REFERENCES = re.compile(
    r"^((\d{1,2}|[IVX]{1,5})\.?\s*)?(references?|bibliography|literature cited|references and notes|"
    r"works cited)\s*$",
    re.IGNORECASE,
)
APPENDIX = re.compile(r"^(appendix|appendices|supplementary)\b|^[A-H](\.\d+)*\.?\s+[A-Z]", re.IGNORECASE)
REFERENCE_ENTRY = re.compile(r"^\[?\d+[\].]\s")  # "[12] A. Author" or "12. A. Author"
CAPTION = re.compile(r"^(figure|fig\.|table|tab\.|algorithm)\s*[A-Z]?\d+(\.\d+)?\s*[:.|]", re.IGNORECASE)
INTRODUCTION = re.compile(r"^((\d|I)\.?\s+)?introduction$", re.IGNORECASE)
KEYWORDS = re.compile(r"^(key\s?words|index terms|subject headings)\b", re.IGNORECASE)
FRONT_MATTER = re.compile(r"^(key\s?words|index terms|subject headings|ccs concepts|acm reference format|"
                          r"additional key words|pacs|msc|mathematics subject classification|general terms|"
                          r"highlights|graphical abstract|article info)\b", re.IGNORECASE)
SMALL_PRINT = 0.93  # lines set this much smaller than the body are footnotes, tables, labels
# Words that commonly start or end a real hyphenated compound: where the paper itself gives no
# evidence, a line-end hyphen between one of them and another word of the paper stays.
COMPOUND_FIRST = frozenset(
    "well self state high low large small real two three four one single double "
    "cross long short fine end data model task first second third zero top bottom "
    "left right time open closed hand fully "
    "so-called near full half case quasi pseudo ill user rule semi non".split()
)
# Prefixes that close up with the word they precede ("interaction", "microscope"): a line-end hyphen
# after one is TeX's unless the paper writes the hyphenated form.
JOINING_PREFIXES = frozenset("inter intra super hyper micro macro over under counter trans multi poly mono "
                             "para meta extra ultra auto".split())
# Words of scientific prose written closed up from two words ("further-" / "more"): without the
# paper's evidence, TeX's break inside one of them is not a compound's hyphen.
CLOSED_COMPOUNDS = frozenset(
    "furthermore moreover nevertheless nonetheless therefore thereby whereby wherein whereas however "
    "whatever whenever wherever within without throughout another become overall outperform outperforms "
    "outperformed framework frameworks benchmark benchmarks dataset datasets baseline baselines workflow "
    "workflows itself themselves something sometimes somewhat everything everywhere anyone online offline "
    "feedback worldwide lifetime timescale timescales upon into onto hereafter meanwhile likewise "
    "otherwise elsewhere nowadays notwithstanding".split()
)
COMPOUND_SECOND = frozenset(
    "known based like scale order level free time wise specific dependent invariant end art "
    "off up step shot trained driven aware dimensional defined world class valued loop "
    "layer term grained tuned agnostic supervised related oriented independent making "
    "efficient sensitive consuming specified posed".split()
)


@dataclass
class Parts:
    """What the paper's lines were found to be."""

    title: str | None = None
    abstract: str | None = None
    sections: list[str] = field(default_factory=list)
    body: str = ""
    dropped: Counter = field(default_factory=Counter)


def split_paper(lines: list[Line], page_height: float, keep_appendix: bool = False,
                words: frozenset[str] | None = None) -> Parts:
    """Find the paper's parts among its lines (furniture already marked).

    `words` (optional) are the model vocabulary's whole words, a last resort for line-end hyphens
    the paper's own words do not decide."""
    parts = Parts()
    for ln in lines:
        if ln.furniture:
            parts.dropped[ln.furniture + " lines"] += 1
    content = [ln for ln in lines if not ln.furniture]
    if not content:
        return parts
    evidence = Evidence.of(content, words)
    body_size = dominant_size(content[: references_by_text(content)])
    headings = find_headings(content, body_size)
    abstract_at = find_abstract(content)
    start = first_section(content, headings, abstract_at)
    refs_at = find_references(content, headings, start)
    appendix_at = find_appendix(content, headings, refs_at)

    parts.title = without_math_marks(find_title(content[: abstract_at if abstract_at is not None else start]))
    parts.dropped["title block lines"] += start
    if abstract_at is not None:
        parts.abstract = without_math_marks(abstract_text(content[abstract_at:start], evidence))
    chosen = body_region(content, start, refs_at, appendix_at, keep_appendix, parts)
    heading_ids = {id(content[i]) for i in headings}
    body_lines = drop_floats_and_small_print(chosen, body_size, page_height, parts, heading_ids)
    parts.sections, parts.body = assemble(body_lines, heading_ids, evidence)
    return parts


def body_region(content: list[Line], start: int, refs_at: int | None, appendix_at: int | None,
                keep_appendix: bool, parts: Parts) -> list[Line]:
    """The lines from the first section to the references, and the appendix after them if asked."""
    if refs_at is None:
        return content[start:]
    stop = appendix_at if appendix_at is not None else len(content)
    parts.dropped["reference lines"] += stop - refs_at
    if appendix_at is None:
        return content[start:refs_at]
    if keep_appendix:
        return content[start:refs_at] + content[appendix_at:]
    parts.dropped["appendix lines"] += len(content) - appendix_at
    return content[start:refs_at]


def assemble(body_lines: list[Line], heading_ids: set[int], evidence: Evidence | None = None) -> tuple[list[str], str]:
    """Section headings, and the body: paragraphs (blank-line separated) of rejoined lines."""
    vocab = evidence if evidence is not None else Evidence.of(body_lines)
    sections: list[str] = []
    paragraphs: list[list[str]] = []
    after_heading = True
    for block in blocks(body_lines, heading_ids):
        if block.heading:
            sections.append(without_math_marks(" ".join(clean(ln.text) for ln in block.lines)))
            after_heading = True
            continue
        texts = [clean(ln.text) for ln in block.lines]
        if paragraphs and not after_heading and continues_paragraph(paragraphs[-1][-1], texts[0]):
            paragraphs[-1] += texts  # a page, column or float break inside a paragraph
        else:
            paragraphs.append(texts)
        after_heading = False
    return sections, "\n\n".join(p for p in (join_lines(t, vocab) for t in paragraphs) if p)


def without_math_marks(text: str | None) -> str | None:
    """Title, abstract and headings are shown to people: no `$` around their math, no `_`/`^`."""
    if not text:
        return None
    return re.sub(r"\$([^$]*)\$", lambda m: m.group(1).replace("_", "").replace("^", ""), text).replace("$", "")


def dominant_size(lines: list[Line]) -> float:
    sizes: Counter[float] = Counter()
    for ln in lines:
        sizes[ln.size] += len(ln.text)
    return sizes.most_common(1)[0][0]


def is_heading(line: Line, body_size: float, margin: float | None = None, gap: float | None = None) -> bool:
    """A short line that looks like a section title: larger, bold, numbered or in capitals.

    `margin` is the x where the line's column starts and `gap` the space above the line: an
    unnumbered bold line counts only when it starts at the margin after some space.
    """
    text = line.text.strip()
    letters = [c for c in text if c.isalpha()]
    if not letters or len(text) > 90 or len(text.split()) > 14 or CAPTION.match(text):
        return False
    if not (text[0].isupper() or text[0].isdigit()) or text.endswith(("-", ",", ";", ":")):
        return False
    numbered = bool(HEADING_NUMBER.match(text))
    if text.endswith(".") and not numbered:
        return False
    size = heading_size(line, letters)
    if size < 0.9 * body_size or re.match(r"^\d+(\.\d+)*\.?\s+\d", text):
        return False  # small print, or a line of numbers (a table row, an equation)
    rest = HEADING_NUMBER.sub("", text) if numbered else text
    if "$" in rest or re.search(r"\w\. [A-Z]", rest) or re.search(r"https?://|www\.|@", rest):
        return False  # math, a sentence break or an address: running text
    broken_title = numbered and line.bold and size >= 1.15 * body_size  # "3 Loading the data from a" / "file"
    if rest.split()[-1].lower() in TRAILING_WORDS and not broken_title:
        return False  # "The affine subspace defined by": a sentence goes on
    keyword = bool(HEADING_WORDS.match(rest))
    if keyword or numbered:
        capitals = sum(c.isupper() for c in letters) / len(letters) > 0.8
        larger = size >= 1.08 * body_size
        return larger or line.bold or capitals
    if len(rest.split()) < 2:
        return False
    at_margin = margin is None or abs(line.x - margin) < 2
    spaced = gap is None or gap > 1.3 * size
    return (line.bold or size >= 1.15 * body_size) and at_margin and spaced


def heading_size(line: Line, letters: list[str]) -> float:
    """The line's size, or for a line in capitals its capitals' size: small capitals ("1 S" at 12
    points, "UBMISSION" at 9.6) carry most of the characters at the smaller size."""
    if sum(c.isupper() for c in letters) < 0.8 * len(letters):
        return line.size
    return max([f.size for f in line.fragments if not f.is_math and any(c.isalpha() for c in f.text)]
               or [line.size])


TRAILING_WORDS = frozenset("a an the of and or to in on by as at for with that we let is are be from".split())


def find_headings(lines: list[Line], body_size: float) -> list[int]:
    """Indices of the heading lines, each judged with its column's margin and the space above it."""
    margins = column_margins(lines)
    found: list[int] = []
    prev: Line | None = None
    for i, ln in enumerate(lines):
        if is_heading(ln, body_size, margins[(ln.page, ln.column)], _gap(prev, ln)):
            found.append(i)
        prev = ln
    return found


def column_margins(lines: list[Line]) -> dict[tuple[int, int], float]:
    """The x where the lines of running text of each (page, column) start."""
    starts: dict[tuple[int, int], Counter] = {}
    for ln in lines:
        weight = 10 if len(ln.text) >= 30 else 1  # lines of running text, not formula pieces
        starts.setdefault((ln.page, ln.column), Counter())[round(ln.x)] += weight
    return {key: _leftmost_frequent(c) for key, c in starts.items()}


def _leftmost_frequent(starts: Counter) -> float:
    """The leftmost x where many lines start: a table whose second column holds more long lines
    than the page's paragraphs (a notation table) does not move the margin to its column."""
    top = starts.most_common(1)[0][1]
    return float(min(x for x, n in starts.items() if n >= 0.3 * top))


def find_abstract(lines: list[Line]) -> int | None:
    for i, ln in enumerate(lines):
        if ln.page > 1:
            break
        if is_abstract_heading(ln.text):
            return i
    return None


def first_section(lines: list[Line], headings: list[int], abstract_at: int | None) -> int:
    """Index of the first section heading after the abstract (or after the title block).

    Front-matter headings (keywords, CCS concepts) do not count; where the paper numbers its
    sections, the first numbered heading on the first pages is taken.
    """
    after = abstract_at if abstract_at is not None else -1
    candidates = [i for i in headings if i > after and not (abstract_at is None and i == 0)
                  and not ABSTRACT_HEAD.match(plain(lines[i])) and not FRONT_MATTER.match(plain(lines[i]))]
    numbered = [i for i in candidates if HEADING_NUMBER.match(lines[i].text.strip()) and lines[i].page <= 2]
    if candidates and INTRODUCTION.match(HEADING_NUMBER.sub("", plain(lines[candidates[0]]))):
        return candidates[0]
    if numbered:
        return numbered[0]
    if candidates:
        return candidates[0]
    for i in range(after + 1, len(lines)):  # an introduction not set apart by its font
        if INTRODUCTION.match(plain(lines[i])):
            return i
    return after + 1 if abstract_at is not None else 0


def plain(line: Line) -> str:
    """The line's text for matching keywords: small capitals drawn apart ("R EFERENCES") closed."""
    return re.sub(r"\b([A-Z]) (?=[A-Z]{2,}\b)", r"\1", line.text.strip())


def references_by_text(lines: list[Line]) -> int:
    """Index of the last line that reads like a references heading, or the end."""
    for i in range(len(lines) - 1, -1, -1):
        if REFERENCES.match(plain(lines[i])):
            return i if i > len(lines) // 3 else len(lines)
    return len(lines)


def find_references(lines: list[Line], headings: list[int], start: int) -> int | None:
    for i in headings:
        if i > start and REFERENCES.match(plain(lines[i])):
            return i
    for i in range(len(lines) - 1, start, -1):  # a references heading not set apart by its font
        if REFERENCES.match(plain(lines[i])) and alone_on_its_baseline(lines, i):
            return i
    return None


def alone_on_its_baseline(lines: list[Line], i: int) -> bool:
    """No other line of the page shares the line's baseline: not a table's cell ("bibliography |
    10 pt" in a font guide)."""
    line = lines[i]
    return not any(other.page == line.page and abs(other.y - line.y) < 1.0
                   for other in lines[max(0, i - 12): i] + lines[i + 1: i + 13])


def find_appendix(lines: list[Line], headings: list[int], refs_at: int | None) -> int | None:
    """First heading after the references list that starts an appendix."""
    if refs_at is None:
        return None
    for i in headings:
        line = lines[i]
        if i <= refs_at or REFERENCE_ENTRY.match(line.text):
            continue
        looks_like_the_references_heading = line.bold or line.size > lines[refs_at].size - 0.5
        if (APPENDIX.match(line.text) or HEADING_NUMBER.match(line.text)) and looks_like_the_references_heading:
            return i
    return None


def find_title(front: list[Line]) -> str | None:
    """The largest text of the first page's title block, first run of it."""
    first_page = [ln for ln in front if ln.page == 0 and len(ln.text) > 3]
    if not first_page:
        return None
    top = max(ln.size for ln in first_page)
    title: list[str] = []
    for ln in first_page:
        if ln.size == top:
            title.append(clean(ln.text))
        elif title:
            break
    return " ".join(title) or None



def abstract_text(lines: list[Line], evidence: Evidence | None = None) -> str:
    """The abstract's lines without its heading and a trailing keywords line."""
    texts = [clean(ln.text) for ln in lines]
    if texts:
        texts[0] = ABSTRACT_HEAD.sub("", texts[0]).lstrip(" .:—–-")
    kept: list[str] = []
    for t in texts:
        if KEYWORDS.match(t):
            break
        kept.append(t)
    return join_lines([t for t in kept if t], evidence if evidence is not None else Evidence.of(lines))


def drop_floats_and_small_print(lines: list[Line], body_size: float, page_height: float,
                                parts: Parts, headings: set[int]) -> list[Line]:
    """Remove captions (a block that starts with "Figure 3:") and small print (footnotes, labels).

    A caption goes on while lines follow at line spacing in its column; figure labels drawn
    between its lines do not end it.
    """
    kept: list[Line] = []
    caption: Line | None = None  # the caption's last line, while in one
    margins = column_margins(lines)
    for ln in lines:
        text = ln.text.strip()
        if id(ln) in headings or kept and id(kept[-1]) in headings and _continues_heading(kept[-1], ln):
            caption = None
            kept.append(ln)  # a heading, or its second line
        elif (CAPTION.match(text) or bold_float_label(ln)) and _starts_block(kept[-1] if kept else None, ln):
            caption = ln
            parts.dropped["caption lines"] += 1
        elif caption is not None and _next_line_of(caption, ln):
            caption = ln
            parts.dropped["caption lines"] += 1
        elif ln.size < SMALL_PRINT * body_size and not _mostly_math(ln) and not _has_body_text(ln, body_size):
            parts.dropped["footnote lines" if ln.y < 0.3 * page_height else "small print lines"] += 1
        elif not is_prose(ln, margins[(ln.page, ln.column)]):
            parts.dropped["figure and table text lines"] += 1
        else:
            caption = None
            kept.append(ln)
    return kept


FLOAT_LABEL = re.compile(r"^(figure|fig\.|table|tab\.|algorithm)\s*[A-Z]?\d+(\.\d+)?[:.]?$", re.IGNORECASE)


def bold_float_label(line: Line) -> bool:
    """A float's title whose label alone is bold and has no colon: "**Algorithm 1** Multi-step ..."."""
    first = line.fragments[0]
    return bool(BOLD_FONT.search(first.font)) and bool(FLOAT_LABEL.match(first.text.strip()))


def is_prose(line: Line, margin: float) -> bool:
    """Running text or a formula, not the labels of a figure or the cells of a table."""
    if _mostly_math(line):
        return True
    text = re.sub(r"\$[^$]*\$", " ", line.text)
    words = re.findall(r"[^\W\d_]{2,}", text)
    if line.x < margin - 5:
        return False  # left of the text block: figure labels
    if len(words) >= 3:
        return True
    return abs(line.x - margin) < 2 and bool(words)  # a short line of running text ("where", "ture.")


def _starts_block(prev: Line | None, line: Line) -> bool:
    """Not the continuation of a sentence from the line above (`... as shown in` / `Figure 3.`)."""
    gap = _gap(prev, line)
    return gap is None or gap > 1.25 * line.size or prev.text.rstrip().endswith((".", "!", "?", ":"))


def _next_line_of(above: Line, line: Line) -> bool:
    gap = _gap(above, line)
    return gap is not None and 0 < gap <= 1.45 * line.size


def _has_body_text(line: Line, body_size: float) -> bool:
    """A run of words at the body's size: a line of running text whose smaller typewriter or
    small-caps pieces (a URL, a file name) carry most of its characters is no small print."""
    return any(not f.is_math and f.size >= SMALL_PRINT * body_size and len(re.findall(r"[^\W\d_]", f.text)) >= 8
               for f in line.fragments)


def _mostly_math(line: Line) -> bool:
    """A display formula, whose glyphs are mostly sub- and superscripts of math fonts."""
    chars = sum(len(f.text.strip()) for f in line.fragments)
    math = sum(len(f.text.strip()) for f in line.fragments if f.is_math)
    return chars > 0 and math / chars > 0.4


def _gap(prev: Line | None, line: Line) -> float | None:
    """Distance between two baselines on the same page, None across pages or columns."""
    if prev is None or prev.page != line.page or prev.column != line.column:
        return None
    return prev.y - line.y


@dataclass
class Block:
    lines: list[Line]
    heading: bool = False


def blocks(lines: list[Line], heading_ids: set[int]) -> list[Block]:
    """Paragraphs and headings: a new paragraph after a wide gap or at an indented line."""
    if not lines:
        return []
    size = dominant_size(lines)
    spacing = _line_spacing(lines, size)
    out: list[Block] = []
    current: Block | None = None
    prev: Line | None = None
    for ln in lines:
        if id(ln) in heading_ids:
            out.append(Block([ln], heading=True))
            current = None
        elif out and out[-1].heading and _continues_heading(out[-1].lines[-1], ln):
            out[-1].lines.append(ln)
        else:
            gap = _gap(prev, ln)
            indented = prev is not None and prev.column == ln.column and ln.x - prev.x > 0.6 * ln.size
            new_par = current is None or indented or (gap is not None and gap > 1.35 * spacing)
            if new_par:
                current = Block([ln])
                out.append(current)
            else:
                current.lines.append(ln)
        prev = ln
    return out


def _continues_heading(heading: Line, line: Line) -> bool:
    """A heading's second line: same style, right below it, short."""
    gap = _gap(heading, line)
    text = line.text
    capitals = text.isupper() and heading.text.isupper()
    return gap is not None and gap < 1.4 * heading.size and len(text) < 60 and abs(line.size - heading.size) < 0.6 \
        and (capitals or (line.bold and heading.bold)) and not text.endswith(".")


def _line_spacing(lines: list[Line], size: float) -> float:
    gaps = [a.y - b.y for a, b in zip(lines, lines[1:], strict=False) if a.page == b.page and a.column == b.column
            and 0 < a.y - b.y < 2.5 * size]
    return statistics.median(gaps) if gaps else 1.2 * size


def clean(text: str) -> str:
    """Compatibility characters (ligatures, wide forms) folded; spacing accents composed."""
    text = re.sub(r"(?<=\w)\x0c|\x0c(?=\w)", "fi", text)  # a badly mapped fi ligature
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ue000-\uf8ff]", " ", text)  # controls, private use
    text = re.sub(r"[\u200b-\u200d\u2060\ufeff]", "", text)  # zero-width characters
    text = _compose_accents(text)
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip()


SPACING_ACCENTS = {"¨": "\u0308", "´": "\u0301", "`": "\u0300", "ˆ": "\u0302", "˜": "\u0303",
                   "ˇ": "\u030c", "˚": "\u030a", "¸": "\u0327", "˘": "\u0306", "˙": "\u0307"}


def _compose_accents(text: str) -> str:
    """"Na¨ıve" (a spacing accent before its letter, as TeX fonts draw it) -> "Naïve"."""
    def compose(m: re.Match) -> str:
        letter = "i" if m.group(2) == "ı" else m.group(2)
        return unicodedata.normalize("NFC", letter + SPACING_ACCENTS[m.group(1)])

    text = re.sub(r"([¨´`ˆ˜ˇ˚˘˙])\s?([A-Za-zı])", compose, text)
    # TeX sets the cedilla and the ogonek after their letter: "s¸ims¸ek" -> "şimşek"
    return re.sub(r"([A-Za-z])([¸˛])", lambda m: unicodedata.normalize(
        "NFC", m.group(1) + ("\u0327" if m.group(2) == "¸" else "\u0328")), text)


WORD_EDGES = ".,;:()[]{}\"'“”‘’!?"


@dataclass
class Evidence:
    """How often the paper writes each word (lowercased, hyphenated ones whole), counted inside
    lines: not the two pieces of a word broken at a line end. `parts` are the words and the pieces
    of hyphenated ones; `model_words`, when given, the model vocabulary's whole words."""

    counts: Counter = field(default_factory=Counter)
    parts: set[str] = field(default_factory=set)
    model_words: frozenset[str] | None = None

    @classmethod
    def of(cls, lines: list[Line], model_words: frozenset[str] | None = None) -> Evidence:
        ev = cls(model_words=model_words)
        broken_above = False
        for ln in lines:
            tokens = clean(ln.text).split()
            if not any(c.isalpha() for c in ln.text):
                continue  # a line number of a review copy's ruler, between a line and its next
            broken_here = bool(tokens) and tokens[-1].endswith("-")
            for tok in tokens[1 if broken_above else 0: len(tokens) - broken_here]:
                word = tok.strip(WORD_EDGES).lower()
                if word:
                    ev.counts[word] += 1
                    ev.parts.update(word.split("-"))
            broken_above = broken_here
        return ev

    def __contains__(self, word: str) -> bool:
        return word in self.parts or word in self.counts


def vocabulary(lines: list[Line]) -> Evidence:
    """The paper's words, for deciding line-end hyphens (see `Evidence`)."""
    return Evidence.of(lines)


def continues_paragraph(last_line: str, next_line: str) -> bool:
    """Whether a paragraph that ends with `last_line` goes on with `next_line` (no sentence end)."""
    return bool(next_line) and next_line[0].islower() and not last_line.rstrip().endswith((".", "!", "?", ":"))


def join_lines(texts: list[str], vocab: set[str]) -> str:
    """Join a paragraph's lines, rejoining words split by a line-end hyphen."""
    out = ""
    for text in texts:
        if not out:
            out = text
            continue
        if out.endswith("\u00ad"):  # a soft hyphen: always a break inside a word
            out = out[:-1] + text
            continue
        if re.search(r"(https?://|www\.)\S*[/.\-_]$", out):  # a URL broken at the line end
            out += text
            continue
        m = re.search(r"(\w+)-$", out)
        nxt = re.match(r"[^\W\d_]+", text)
        if m and nxt and text[0].islower():
            whole = re.search(r"[\w-]*-$", out).group(0)[:-1].lstrip("-")  # "line-of" of "line-of-"
            if keep_hyphen(whole, nxt.group(0), vocab):
                out += text
            else:
                out = out[:-1] + text
        elif m and nxt:
            out += text  # "Grad-" + "Shafranov": a hyphen before a capital is real
        else:
            out += " " + text
    return out


def keep_hyphen(first: str, second: str, evidence: Evidence) -> bool:
    """Whether a line-end hyphen is a real one ("well-known") or TeX's ("op-posite"), by evidence:
    the hyphenated form written elsewhere in the paper keeps it, the joined form joins it, the more
    frequent wins and ties keep it. `first` is all of the word before the hyphen ("line-of" of
    "line-of-sight"). Without evidence, a joined form that is one word of the model's vocabulary
    joins; then TeX's hyphenation limits decide (at least 2 letters before its break, 3 after),
    and the hyphen stays between two words of the paper or a common compound's part."""
    first, b = first.lower(), second.lower()
    a = first.rsplit("-", 1)[-1]
    hyphenated = {f"{first}-{b}", f"{a}-{b}"}
    joined = {first + b, a + b}
    kept = sum(evidence.counts[w] for w in hyphenated)
    closed = sum(evidence.counts[w] for w in joined)
    if kept or closed:
        return kept >= closed
    if evidence.model_words is not None and a + b in evidence.model_words:
        return False
    if a + b in CLOSED_COMPOUNDS:
        return False
    if len(a) < 2 or len(b) < 3:
        return True  # TeX leaves at least 2 letters before its break and 3 after: "x-axis"
    if len(a) == 2:
        return False  # "un-like", "in-dependent"
    if a in COMPOUND_FIRST or b in COMPOUND_SECOND:
        return True
    # a word of the paper after a word ("negative-energy", "eighth-order"): TeX's breaks leave a
    # non-word after the hyphen ("op-posite") or a prefix before it ("inter-action")
    return b in evidence and (a in evidence or len(a) >= 4 and a not in JOINING_PREFIXES)
