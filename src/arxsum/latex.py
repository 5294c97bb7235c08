"""LaTeX source -> Document: title, abstract, section headings and the body between them.

The body keeps the paper's math as `$...$` / `$$...$$` and its citations as `\\cite{...}`, which
`normalize.py` turns into `@xmathN` and `@xcite`, as it does for PDFs. Everything else LaTeX is
stripped: commands, environments' markers, floats (figures, tables and their captions), footnotes.
This is a pragmatic converter for the common case, not a TeX engine: macros without arguments
defined with \\def or \\newcommand are expanded, others are dropped keeping their braced text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from arxsum.document import Document
from arxsum.errors import InputError

FLOATS = ("figure", "figure*", "table", "table*", "wrapfigure", "wraptable", "algorithm", "algorithm*",
          "algorithmic", "tabular", "tabular*", "tabularx", "lstlisting", "verbatim", "thebibliography",
          "comment", "tikzpicture", "subfigure", "minipage*")
DISPLAY_MATH = ("equation", "equation*", "align", "align*", "eqnarray", "eqnarray*", "gather", "gather*",
                "multline", "multline*", "displaymath", "flalign", "flalign*", "alignat", "alignat*",
                "dmath", "dmath*", "subequations", "split", "math")
DROP_WITH_ARGS = {
    "label", "ref", "eqref", "autoref", "cref", "Cref", "pageref", "vref", "url", "includegraphics",
    "vspace", "hspace", "vskip", "hskip", "bibliographystyle", "bibliography", "setlength", "addtolength",
    "setcounter", "addtocounter", "footnote", "footnotetext", "thanks", "input", "include", "usepackage",
    "documentclass", "newcommand", "renewcommand", "providecommand", "newtheorem", "newenvironment",
    "pagestyle", "thispagestyle", "markboth", "markright", "caption", "captionof", "affiliation",
    "author", "email", "address", "institute", "keywords", "date", "definecolor", "color", "ack",
    "hypersetup", "graphicspath", "linenumbers", "numberwithin", "DeclareMathOperator", "newtoggle",
    "iftoggle", "togglefalse", "toggletrue", "todo", "fnref", "tnoteref", "orcid", "altaffiliation",
    "noindent", "centering", "maketitle", "tableofcontents", "newpage", "clearpage", "par", "medskip",
    "bigskip", "smallskip", "vfill", "hfill", "linebreak", "pagebreak", "nolinebreak", "item",
}
ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
           ".": "\u0307", "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328",
           "r": "\u030a"}
LETTERS = {"ss": "ß", "o": "ø", "O": "Ø", "aa": "å", "AA": "Å", "ae": "æ", "AE": "Æ", "oe": "œ",
           "OE": "Œ", "l": "ł", "L": "Ł", "i": "ı", "j": "ȷ"}
SECTION = re.compile(r"\\(part|chapter|section|subsection|subsubsection)\*?\s*(\[[^\]]*\])?\s*\{")
BIBLIOGRAPHY = re.compile(r"\\bibliography\s*\{|\\begin\{thebibliography\}|\\printbibliography|"
                          r"\\begin\{references\}")


def latex_document(source: str, name: str, *, keep_appendix: bool = False) -> Document:
    """A .tex file's parts; the body runs from the first section after the abstract to the references."""
    text = strip_comments(source)
    text = expand_simple_macros(text)
    title = braced_argument(text, r"\\title\s*(\[[^\]]*\])?\s*\{")
    abstract = environment_body(text, "abstract") or braced_argument(text, r"\\abstract\s*\{")
    begin = text.find("\\begin{document}")
    document = text[begin + len("\\begin{document}"):] if begin >= 0 else text
    end_doc = document.find("\\end{document}")
    document = document[:end_doc] if end_doc >= 0 else document
    dropped: Counter[str] = Counter()

    abstract_end = document.find("\\end{abstract}")
    first = SECTION.search(document, max(abstract_end, 0))
    start = first.start() if first else max(abstract_end + len("\\end{abstract}"), 0)
    bib = BIBLIOGRAPHY.search(document, start)
    body = document[start: bib.start() if bib else len(document)]
    if bib:
        after = document[bib.start():]
        appendix = re.search(r"\\appendix\b|\\begin\{appendix\}", after)
        if appendix and keep_appendix:
            body += "\n\n" + after[appendix.start():]
        elif appendix:
            dropped["appendix characters"] += len(after) - appendix.start()
    sections = [to_text(h) for h in section_titles(body)]
    floats_before = len(body)
    body = remove_environments(body, FLOATS)
    dropped["float characters (figures, tables)"] += floats_before - len(body)
    body = to_text(body)
    if not body.strip():
        inputs = re.findall(r"\\(?:input|include)\s*\{([^}]*)\}", document)
        hint = f" (it \\inputs {', '.join(inputs[:4])}: pass the PDF or a flattened .tex)" if inputs else ""
        raise InputError(f"no body text in the LaTeX source{hint}")
    return Document(source=name, kind="tex", body=body, title=one_line(title), abstract=one_line(abstract),
                    sections=[" ".join(s.split()) for s in sections],
                    dropped={k: v for k, v in dropped.items() if v})


def one_line(latex: str | None) -> str | None:
    return " ".join(to_text(latex).split()) or None if latex else None


def strip_comments(text: str) -> str:
    text = re.sub(r"(?<!\\)%.*", "", text)
    return re.sub(r"\\iffalse\b.*?\\fi\b", "", text, flags=re.DOTALL)


def expand_simple_macros(text: str) -> str:
    """Inline macros without arguments: \\def\\be{\\begin{equation}}, \\newcommand{\\R}{\\mathbb{R}}."""
    macros: dict[str, str] = {}
    pattern = re.compile(r"\\(?:def|newcommand|renewcommand|providecommand)\*?\s*\{?\\([A-Za-z]+)\}?\s*\{")
    for m in pattern.finditer(text):
        body = balanced(text, m.end() - 1)
        if body is not None and "#" not in body:
            macros[m.group(1)] = body
    if not macros:
        return text
    names = "|".join(sorted(map(re.escape, macros), key=len, reverse=True))
    use = re.compile(rf"\\({names})(?![A-Za-z])")
    begin = text.find("\\begin{document}")
    head, rest = (text[:begin], text[begin:]) if begin >= 0 else ("", text)
    for _ in range(3):  # macros defined with other macros
        rest = use.sub(lambda m: macros[m.group(1)] + " ", rest)
    return head + rest


def balanced(text: str, open_at: int) -> str | None:
    """The text inside the brace group opening at `open_at`, or None if it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        c = text[i]
        if c == "\\":
            continue
        if c == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif c == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
    return None


def braced_argument(text: str, command: str) -> str | None:
    m = re.search(command, text)
    return balanced(text, m.end() - 1) if m else None


def environment_body(text: str, env: str) -> str | None:
    m = re.search(rf"\\begin\{{{re.escape(env)}\}}(.*?)\\end\{{{re.escape(env)}\}}", text, re.DOTALL)
    return m.group(1) if m else None


def section_titles(text: str) -> list[str]:
    titles = []
    for m in SECTION.finditer(text):
        if m.group(1) in ("section", "chapter", "part", "subsection", "subsubsection"):
            title = balanced(text, m.end() - 1)
            if title is not None:
                titles.append(title)
    return titles


def remove_environments(text: str, names: tuple[str, ...]) -> str:
    for name in names:
        text = re.sub(rf"\\begin\{{{re.escape(name)}\}}.*?\\end\{{{re.escape(name)}\}}", " ", text,
                      flags=re.DOTALL)
    return text


def to_text(latex: str) -> str:
    """LaTeX fragment -> plain text with `$...$` math and `\\cite{...}` citations kept."""
    text = latex
    text = remove_environments(text, FLOATS)
    text = re.sub(r"\\begin\{(" + "|".join(map(re.escape, DISPLAY_MATH)) + r")\}(.*?)\\end\{\1\}",
                  lambda m: f" $${m.group(2)}$$ ", text, flags=re.DOTALL)
    text = re.sub(r"\\\[(.*?)\\\]", lambda m: f" $${m.group(1)}$$ ", text, flags=re.DOTALL)
    text = re.sub(r"\\\((.*?)\\\)", lambda m: f"${m.group(1)}$", text, flags=re.DOTALL)
    text = re.sub(r"\\ensuremath\s*\{([^{}]*)\}", r"$\1$", text)
    text, maths = _hold_math(text)
    text = SECTION.sub(lambda m: "\n\n\\dropgroup{", text)  # headings are not body text
    text = re.sub(r"\\(paragraph|subparagraph)\*?\s*\{([^{}]*)\}", r"\n\n\2. ", text)
    text = re.sub(r"\\href\s*\{[^{}]*\}\s*\{([^{}]*)\}", r"\1", text)
    text = _drop_commands_with_args(text)
    text = re.sub(r"\\begin\{[^}]*\}(\[[^\]]*\])?|\\end\{[^}]*\}", "\n", text)
    text = _accents(text)
    text = text.replace("---", "—").replace("--", "–").replace("``", "“").replace("''", "”")
    text = re.sub(r"\\(%|&|#|_|\{|\})", r"\1", text)
    text = re.sub(r"\\\\(\[[^\]]*\])?|\\newline\b", "\n", text)
    text = re.sub(r"\\[,;:! ]|~", " ", text)
    cites: list[str] = []
    text = re.sub(r"\\(?:no)?cite[a-zA-Z]*\*?(?:\[[^\]]*\]){0,2}\{[^}]*\}",
                  lambda m: cites.append(m.group(0)) or f"\ue001{len(cites) - 1}\ue001", text)
    text = re.sub(r"\\[A-Za-z]+\*?(\[[^\]]*\])?", " ", text)
    text = re.sub(r"[{}]", "", text)
    text = re.sub("\ue001(\\d+)\ue001", lambda m: cites[int(m.group(1))], text)
    text = _restore_math(text, maths)
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return unicodedata.normalize("NFC", "\n\n".join(p for p in paragraphs if p))


def _hold_math(text: str) -> tuple[str, list[str]]:
    """Math spans set aside so the text clean-up does not touch them."""
    maths: list[str] = []

    def hold(m: re.Match) -> str:
        maths.append(m.group(0))
        return f"\ue002{len(maths) - 1}\ue002"

    return re.sub(r"\$\$.+?\$\$|(?<!\\)\$.+?(?<!\\)\$", hold, text, flags=re.DOTALL), maths


def _restore_math(text: str, maths: list[str]) -> str:
    def restore(m: re.Match) -> str:
        span = maths[int(m.group(1))]
        inner = span.strip("$")
        inner = re.sub(r"\\(label|tag|nonumber|notag)\b(\{[^{}]*\})?", "", inner)
        return ("$$" if span.startswith("$$") else "$") + re.sub(r"\s+", " ", inner).strip() + \
            ("$$" if span.startswith("$$") else "$")

    return re.sub("\ue002(\\d+)\ue002", restore, text)


def _drop_commands_with_args(text: str) -> str:
    """Commands whose arguments are not text (\\label{..}, \\footnote{..}) go with their arguments."""
    pattern = re.compile(r"\\(" + "|".join(sorted(DROP_WITH_ARGS | {"dropgroup"}, key=len, reverse=True))
                         + r")\*?(?![A-Za-z])\s*(\[[^\]]*\])?")
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos:m.start()])
        pos = m.end()
        while pos < len(text) and text[pos] == "{":
            inner = balanced(text, pos)
            if inner is None:
                break
            pos += len(inner) + 2
            if m.group(1) == "dropgroup":
                out.append("\n\n")
                break
        out.append(" ")
    out.append(text[pos:])
    return "".join(out)


def _accents(text: str) -> str:
    def accent(m: re.Match) -> str:
        letter = LETTERS.get(m.group(2), m.group(2)) if m.group(2) in ("i", "j") else m.group(2)
        letter = "i" if letter == "ı" else "j" if letter == "ȷ" else letter
        return unicodedata.normalize("NFC", letter + ACCENTS[m.group(1)])

    text = re.sub(r"\\(['`^\"~=.])\s*\{?\\?([A-Za-z])\}?", accent, text)
    text = re.sub(r"\\([uvHckr])\s*\{\\?([A-Za-z])\}", accent, text)
    text = re.sub(r"\{?\\(ss|aa|AA|ae|AE|oe|OE|o|O|l|L)\}?(?![A-Za-z])", lambda m: LETTERS[m.group(1)], text)
    return text
