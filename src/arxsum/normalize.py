"""Document body <-> the model's training text (@xmath/@xcite), and the summary back to prose.

The model was fine-tuned on the arXiv summarization data (Cohan et al., 2018, arXiv:1804.05685):
LaTeX turned into lowercased text with spaces around punctuation, every formula replaced by
`@xmathN` (numbered in order) and every citation by `@xcite`. `to_model_text` brings a paper's
body to that form; `readable` turns the model's summary, written in that style, into prose.

Math reaches this module in two ways: explicitly, as `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]`
spans (the LaTeX path, and the PDF path for glyphs set in math fonts), and implicitly, as words
holding Greek letters or math operators (PDFs whose math fonts we do not know).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from arxsum.document import Document, ModelText

PROTECTED = re.compile(r"@xmath\d+|@xcite")
URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]*[^\s<>\"')\].,;:]", re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
LATEX_CITE = re.compile(r"\\(?:no)?cite[a-zA-Z]*\*?(?:\[[^\]]*\]){0,2}\{[^}]*\}")
NUMERIC_CITE = re.compile(r"\[\s*\d{1,3}(?:\s*[-–,;]\s*\d{1,3})*(?:\s*,\s*[A-Za-z][^\]\[]{0,30})?\s*\]")
ALPHA_CITE = re.compile(r"\[[A-Z][A-Za-z+]{1,8}\s?\d{2,4}[a-z]?(?:\s*[,;]\s*[A-Z][A-Za-z+]{1,8}\s?\d{2,4}[a-z]?)*\]")
_NAME = r"(?:(?:de|van|von|der|den|le|la|di|da|del)\s+)*[A-Z\u00c0-\u00de\u0100-\u017f][\w'’`´¨\-]*[a-zà-ÿ\u0100-\u017f][\w'’\-]*"
_AUTHORS = rf"{_NAME}(?:\s+et\s+al\.?|(?:\s*,\s*{_NAME})*\s*(?:,?\s*(?:and|&)\s+{_NAME}))?"
_YEAR = r"(?:19|20)\d{2}[a-z]?(?:\s*,\s*(?:(?:19|20)\d{2}[a-z]?|[a-z]))*"
_ONE = rf"{_AUTHORS}\s*,?\s*{_YEAR}"
_PREFIX = r"(?:(?:e\.\s?g\.|i\.\s?e\.|see(?:\s+also)?|cf\.|c\.f\.|also)\s*,?\s*)?"
PAREN_CITE = re.compile(rf"\(\s*{_PREFIX}{_ONE}(?:\s*[;,]\s*{_PREFIX}{_ONE})*\s*\)")
_MONTHS = r"(?!(?:January|February|March|April|May|June|July|August|September|October|November|December)\b)"
LOOSE_CITE = re.compile(rf"\b{_MONTHS}{_NAME}(?:\s+et\s+al\.?|\s*(?:,\s*{_NAME}\s*)*,?\s*(?:and|&)\s+{_NAME})"
                        rf"\s*,?\s*{_YEAR}\b")
INNER_CITE = re.compile(rf"(?<=[(;,]\s){_ONE}(?=\s*[;)])|(?<=[(;,]){_ONE}(?=\s*[;)])")
TEXT_CITE = re.compile(rf"\b{_AUTHORS}\s*(?:\(\s*{_YEAR}\s*\)|\[\s*\d{{1,3}}(?:\s*[-–,]\s*\d{{1,3}})*\s*\])")
EXPLICIT_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)
MATH_MARK = "\ue000"  # stands for one formula while the rest of the text is processed
MATH_ONLY = re.compile(
    "[\u0370-\u03ff\u1d26-\u1d2a\u2190-\u21ff\u2200-\u22ff\u2300-\u23ff\u27c0-\u27ef\u2980-\u2aff"
    "\u2100-\u214f\U0001d400-\U0001d7ff±×÷√∞∂∇′″‖⟨⟩·−=<>^_|ˆˇ˘˙˜¯]"
)
WORDLIKE_MATH = re.compile(r"^[A-Za-z]$")  # a one-letter word: math only between other math
SYMBOLS = re.compile(r"^[()\[\]{}+\-*/=<>≤≥|]+$")  # operators and brackets standing alone
MATH_WORDS = frozenset("log exp sin cos tan sinh cosh tanh max min argmax argmin arg lim sup inf det tr ln".split())
OPERATOR_END = re.compile(r"[=<>+×≤≥∈⊂⊆≈∼→≠−*/]$")
OPERATOR_START = re.compile(r"^[=<>+×≤≥∈⊂⊆≈∼→≠−*/]")


def to_model_text(doc: Document) -> ModelText:
    """The text the model should see for this document (normalised to the training text)."""
    text, math = to_training_text(doc.body)
    cased = casing(doc.body)
    return ModelText(text=text, math=math, cased=cased)


def to_training_text(text: str) -> tuple[str, list[str]]:
    """Plain or LaTeX-flavoured text -> (training-style text, math[i] replaced by @xmath i)."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub("[\x00-\x08\x0b-\x1f\x7f-\x9f\ue000-\uf8ff]", " ", text)  # controls, private use
    text = text.replace("\u00ad", "")  # soft hyphens
    text = remove_urls_and_emails(text)
    text = replace_citations(text)
    text, found = mark_explicit_math(text)
    text = re.sub(r"(?:^|(?<=\s))[•∙◦▪‣]\s", " ", text)  # list bullets
    text, spans = mark_implicit_math(text, found)
    text = space_punctuation(text).lower()
    return number_math(text, spans)


def remove_urls_and_emails(text: str) -> str:
    text = URL.sub(" ", text)
    return EMAIL.sub(" ", text)


def replace_citations(text: str) -> str:
    """Citation markers of every common style -> @xcite."""
    text = LATEX_CITE.sub(" @xcite ", text)
    text = TEXT_CITE.sub(" @xcite ", text)
    text = NUMERIC_CITE.sub(" @xcite ", text)
    text = ALPHA_CITE.sub(" @xcite ", text)
    text = PAREN_CITE.sub(" @xcite ", text)
    text = INNER_CITE.sub(" @xcite ", text)
    text = LOOSE_CITE.sub(" @xcite ", text)
    # what is left of partly replaced groups: "( @xcite ; @xcite )", "@xcite , @xcite"
    for _ in range(3):
        text = re.sub(r"@xcite\s*[;,]\s*@xcite", "@xcite", text)
        text = re.sub(r"\(\s*(?:e\.\s?g\.|see|cf\.)?\s*,?\s*@xcite\s*\)", " @xcite ", text)
    return text


def mark_explicit_math(text: str) -> tuple[str, list[str]]:
    """`$...$`-style spans -> one math mark each; returns the text and the spans in order."""
    found: list[str] = []

    def mark(m: re.Match) -> str:
        body = next(g for g in m.groups() if g is not None)
        found.append(re.sub(r"\s+", " ", body).strip())
        return f"{MATH_MARK}{len(found) - 1}{MATH_MARK}"

    text = EXPLICIT_MATH.sub(mark, text)
    # a lone "$" (a span cut by a line or a page) is noise
    return text.replace("$", " "), found


def mark_implicit_math(text: str, found: list[str]) -> tuple[str, list[str]]:
    """Runs of words that are math (marks, Greek letters, operators) -> one math mark per run.

    Returns the text with marks `MATH_MARK<k>MATH_MARK` and spans[k], the math each mark stands for.
    """
    tokens = text.split()
    is_math = [_is_math_token(t) for t in tokens]
    for _ in range(2):  # "+" between two formulas, "x" before "∈ R", "1" after "=" belong to them
        for i in range(len(tokens)):
            if not is_math[i] and _joins_math(tokens, is_math, i):
                is_math[i] = True
    spans: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if not is_math[i]:
            out.append(tokens[i])
            i += 1
            continue
        j = i
        while j < len(tokens) and is_math[j]:
            j += 1
        lead, run, trail = _trim_run(" ".join(tokens[i:j]), found)
        if run:
            spans.append(_expand_marks(run, found))
            out.append(f"{lead} {MATH_MARK}{len(spans) - 1}{MATH_MARK} {trail}".strip())
        else:
            out.append(lead + trail)
        i = j
    return " ".join(out), spans


def _joins_math(tokens: list[str], is_math: list[bool], i: int) -> bool:
    """Whether a word next to math belongs to it: '+', '(', 'x' before '∈ R', '1' after '=', 'log'."""
    tok = tokens[i]
    before = i > 0 and is_math[i - 1]
    after = i + 1 < len(tokens) and is_math[i + 1]
    if not (before or after):
        return False
    if SYMBOLS.match(tok):
        left = before or i > 0 and bool(SYMBOLS.match(tokens[i - 1]))
        right = after or i + 1 < len(tokens) and bool(SYMBOLS.match(tokens[i + 1]))
        return left and right
    if tok.lower() in MATH_WORDS:
        return True
    if WORDLIKE_MATH.match(tok) and tok not in "aAI" and before and after:
        return True
    if WORDLIKE_MATH.match(tok) and tok not in "aAI" or re.fullmatch(r"\(?[\d.]+\)?[,.;]?", tok):
        return (before and OPERATOR_END.search(tokens[i - 1]) is not None) or \
            (after and OPERATOR_START.match(tokens[i + 1]) is not None)
    return False


def _is_math_token(token: str) -> bool:
    if MATH_MARK in token:
        return True
    if PROTECTED.fullmatch(token) or not MATH_ONLY.search(token):
        return False
    return not re.fullmatch(r"[-–—=_|<>^]+", token) or len(token) == 1 and token in "=<>"


def _trim_run(run: str, found: list[str]) -> tuple[str, str, str]:
    """Sentence punctuation around a formula stays outside it: '(', ',', '.', ')' ..."""
    lead = ""
    trail = ""

    def unbalanced(close: str, open_: str) -> bool:
        expanded = _expand_marks(run, found)
        return expanded.count(close) > expanded.count(open_)

    while run and run[-1] in ".,;:" or run.endswith(")") and unbalanced(")", "("):
        trail = run[-1] + trail
        run = run[:-1].rstrip()
    while run and run[0] in "([":
        close = ")" if run[0] == "(" else "]"
        if not unbalanced(run[0], close):
            break
        lead += run[0]
        run = run[1:].lstrip()
    return lead, run, trail


def _expand_marks(run: str, found: list[str]) -> str:
    """The math a run stands for, explicit spans put back in."""
    return re.sub(f"{MATH_MARK}(\\d+){MATH_MARK}", lambda m: found[int(m.group(1))], run).strip()


def space_punctuation(text: str) -> str:
    """Spaces around punctuation as in the dataset: 'well - known', 'results , which', '( see )'."""
    text = re.sub(r"[‘’`´]", "'", text)
    text = re.sub(r"[“”]|''|``", '"', text)
    text = re.sub(r"[–—]", " - ", text)
    text = re.sub(r"(?<=\w)-(?=\w)", " - ", text)  # well-known -> well - known
    text = re.sub(r"([,;:!?()\[\]{}\"%])", r" \1 ", text)
    text = re.sub(r"(?<![\w.])'|'(?![\w])", " ' ", text)  # quotes, not apostrophes
    text = re.sub(r"(?<!\b[a-z]\.[a-z])\.(?=\s|$)", " . ", text)  # not inside a word (3.5) or i.e., e.g.
    text = re.sub(r"(?<=\s)-(?=\S)|(?<=\S)-(?=\s)", " - ", text)
    text = re.sub(r"\.\s+\.\s+\.", "...", text)
    return re.sub(r"\s+", " ", text).strip()


def number_math(text: str, spans: list[str]) -> tuple[str, list[str]]:
    """Math marks -> @xmathN, numbered in order of appearance after any @xmath already there."""
    existing = [int(n) for n in re.findall(r"@xmath(\d+)", text)]
    first = max(existing) + 1 if existing else 0
    math: list[str] = [""] * first

    def number(m: re.Match) -> str:
        math.append(spans[int(m.group(1))])
        return f"@xmath{len(math) - 1}"

    text = re.sub(f"{MATH_MARK}(\\d+){MATH_MARK}", number, text)
    return text, math


def casing(text: str) -> dict[str, str]:
    """Words the paper writes with capitals mid-sentence (GAIL, Kerr, IMDB): lowercase -> as written."""
    seen: dict[str, Counter] = {}
    for m in re.finditer(r"(?<![.!?]\s)(?<!\n)(?<!^)\b([A-Za-z][A-Za-z0-9]*)\b", text):
        word = m.group(1)
        seen.setdefault(word.lower(), Counter())[word] += 1
    cased: dict[str, str] = {}
    for low, forms in seen.items():
        form, count = forms.most_common(1)[0]
        if form != low and count >= 0.6 * sum(forms.values()) and (len(low) > 1):
            cased[low] = form
    return cased


def readable(summary: str, math: list[str], cased: dict[str, str] | None = None) -> str:
    """The model's dataset-style summary as normal prose.

    `@xcite` goes; `@xmathN` becomes math[N] (the formula it replaced in this paper) where there is
    one, otherwise a neutral "[math]"; punctuation is attached, hyphens rejoined, sentences start
    with a capital, and words the paper capitalises (`cased`) are written as it writes them.
    """
    text = re.sub(r"\(\s*(?:see|e\.\s?g\.|cf\.)?\s*,?\s*(?:@xcite\s*[,;]?\s*)+\)", " ", summary)
    text = re.sub(r"\s*@xcite\b", "", text)
    text = re.sub(r"@xmath(\d+)", lambda m: _render_math(m, math), text)
    text = attach_punctuation(text)
    if cased:
        text = re.sub(r"\b[a-z][a-z0-9]*\b", lambda m: cased.get(m.group(0), m.group(0)), text)
    return sentence_case(text)


def _render_math(m: re.Match, math: list[str]) -> str:
    i = int(m.group(1))
    formula = math[i] if i < len(math) and math[i] else None
    if formula is None:
        return "[math]"
    if "\\" in formula or "{" in formula:
        return f"${formula}$"  # LaTeX source: keep it recognisable as math
    if len(formula) > 30 or formula.count("(") != formula.count(")"):
        return "[math]"  # a display formula as PDF glyphs: not readable on one line
    return formula


def attach_punctuation(text: str) -> str:
    text = re.sub(r"\s+([,.;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    text = re.sub(r"(?<=\w) - (?=\w)", "-", text)
    text = re.sub(r"\s+('s|'re|'ll|'ve|'d|n't)\b", r"\1", text)
    text = re.sub(r'"\s+(.*?)\s+"', r'"\1"', text)
    text = re.sub(r"([,;:])(?=[^\s\d])", r"\1 ", text)
    return re.sub(r"\s+", " ", text).strip()


ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|et al|vs|cf|fig|figs|eq|eqs|resp|approx|sec|ref|refs|no)\.$",
                          re.IGNORECASE)


def sentence_case(text: str) -> str:
    """Capital letter at the start of each sentence (not after "e.g."), and for the pronoun 'I'."""
    def capitalise(m: re.Match) -> str:
        before = text[: m.start(2)].rstrip()
        if before and ABBREVIATION.search(before):
            return m.group(0)
        return m.group(1) + m.group(2).upper()

    text = re.sub(r"(^|[.!?]\s+)([a-z])", capitalise, text)
    return re.sub(r"\bi\b(?!\.)", "I", text)
