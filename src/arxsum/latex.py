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
from dataclasses import dataclass

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
    text, macro_notes = expand_macros(text)
    title = braced_argument(text, r"\\title\s*(\[[^\]]*\])?\s*\{")
    abstract = environment_body(text, "abstract") or braced_argument(text, r"\\abstract\s*\{")
    begin = text.find("\\begin{document}")
    document = text[begin + len("\\begin{document}"):] if begin >= 0 else text
    end_doc = document.find("\\end{document}")
    document = document[:end_doc] if end_doc >= 0 else document
    dropped: Counter[str] = Counter(macro_notes)

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


MAX_MACRO_DEPTH = 32  # a macro expanding to itself stops here
MAX_EXPANSIONS = 200_000  # and a chain that doubles at each level (\\def\\a{\\b\\b}...) stops here
MAX_EXPANDED_CHARS = 16 * 2**20
NEVER_EXPAND = frozenset({"todo"})  # a paper's own \\todo is still a note to its authors: dropped
DEFINERS = frozenset({"newcommand", "renewcommand", "providecommand", "DeclareRobustCommand", "def", "gdef",
                      "edef", "xdef", "let", "DeclareMathOperator", "newtoggle", "toggletrue", "togglefalse",
                      "iftoggle"})
CONTROL_WORD = re.compile(r"\\([A-Za-z]+)")
PARAMETER = re.compile(r"#(#|[1-9])")


@dataclass
class Macro:
    body: str
    args: int = 0
    default: str | None = None  # the first argument's default: it is then optional, in [...]


def expand_macros(text: str) -> tuple[str, Counter]:
    """The text with the macros it defines expanded where they are used, as TeX would.

    \\newcommand, \\renewcommand, \\providecommand, \\DeclareRobustCommand (with [n] arguments and a
    [default] first one), \\def (with #1#2... parameters; delimited parameters are not read), \\let and
    \\DeclareMathOperator; etoolbox toggles pick their branch. Definitions are removed; a macro used in
    math expands inside that math. Returns the text and notes for `dropped` (limits reached).
    """
    return _Expander().run(text)


class _Expander:
    """A small TeX-like input stack: an expansion is read before the text after it, so a macro can
    take its arguments from the text that follows its use."""

    def __init__(self) -> None:
        self.macros: dict[str, Macro] = {}
        self.toggles: dict[str, bool] = {}
        self.notes: Counter = Counter()
        self.frames: list[list] = []  # [text, pos, depth], innermost last
        self.expansions = 0
        self.expanded_chars = 0

    def run(self, text: str) -> tuple[str, Counter]:
        out: list[str] = []
        self.frames = [[text, 0, 0]]
        while self.frames:
            frame = self.frames[-1]
            src, pos, depth = frame
            i = src.find("\\", pos)
            if i < 0:
                out.append(src[pos:])
                self.frames.pop()
                self._separate(out)
                continue
            out.append(src[pos:i])
            m = CONTROL_WORD.match(src, i)
            if m is None:  # \\\\, \\$, \\%: a control symbol, kept
                out.append(src[i:i + 2])
                frame[1] = i + 2
                continue
            name = m.group(1)
            frame[1] = m.end()
            if name in DEFINERS:
                self._define(name, out)
            elif name in self.macros and name not in NEVER_EXPAND and self._may_expand(name, depth):
                self._expand(name, depth, out)
            else:
                out.append(m.group(0))
        return "".join(out), self.notes

    def _separate(self, out: list[str]) -> None:
        """An expansion that ends in a control word, before a letter: a space keeps them apart."""
        if out and self.frames and re.search(r"\\[A-Za-z]+$", out[-1]):
            src, pos, _ = self.frames[-1]
            if pos < len(src) and src[pos].isalpha():
                out.append(" ")

    # -- reading from the input stack --

    def _peek(self) -> str:
        """The next character, popping finished expansions; "" at the very end."""
        while self.frames:
            src, pos, _ = self.frames[-1]
            if pos < len(src):
                return src[pos]
            if len(self.frames) == 1:
                return ""
            self.frames.pop()
        return ""

    def _skip_spaces(self) -> None:
        while self._peek() in (" ", "\t", "\n") and self._peek():
            self.frames[-1][1] += 1

    def _read_group(self) -> str:
        """A balanced {...}'s inside (the brace at the current position), or to the frame's end."""
        frame = self.frames[-1]
        src, pos = frame[0], frame[1]
        inner = balanced(src, pos)
        if inner is None:
            frame[1] = len(src)
            return src[pos + 1:]
        frame[1] = pos + len(inner) + 2
        return inner

    def _read_arg(self) -> str:
        """One undelimited argument: a brace group (braces stripped), a control sequence or a character."""
        self._skip_spaces()
        c = self._peek()
        if not c:
            return ""
        frame = self.frames[-1]
        src, pos = frame[0], frame[1]
        if c == "{":
            return self._read_group()
        if c == "\\":
            m = CONTROL_WORD.match(src, pos)
            end = m.end() if m else min(len(src), pos + 2)
            frame[1] = end
            return src[pos:end]
        frame[1] = pos + 1
        return c

    def _read_optional(self) -> str | None:
        """A [...] argument (brackets inside braces do not end it), or None when there is none."""
        self._skip_spaces()
        if self._peek() != "[":
            return None
        frame = self.frames[-1]
        src, pos = frame[0], frame[1]
        depth = 0
        for j in range(pos + 1, len(src)):
            c = src[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "]" and depth <= 0:
                frame[1] = j + 1
                return src[pos + 1:j]
        return None

    def _read_name(self) -> str | None:
        """The macro a definition names: \\name or {\\name}."""
        self._skip_spaces()
        c = self._peek()
        frame = self.frames[-1]
        src, pos = frame[0], frame[1]
        if c == "{":
            m = re.compile(r"\{\s*\\([A-Za-z@]+|.)\s*\}").match(src, pos)
        elif c == "\\":
            m = re.compile(r"\\([A-Za-z@]+|.)").match(src, pos)
        else:
            return None
        if m is None:
            return None
        frame[1] = m.end()
        return m.group(1)

    # -- definitions and uses --

    def _define(self, command: str, out: list[str]) -> None:
        if command in ("newtoggle", "togglefalse", "toggletrue"):
            name = self._read_arg().strip()
            self.toggles[name] = command == "toggletrue"
            return
        if command == "iftoggle":
            name, yes, no = self._read_arg().strip(), self._read_arg(), self._read_arg()
            self._push(yes if self.toggles.get(name, False) else no, self.frames[-1][2])
            return
        star = self._star()
        name = self._read_name()
        if name is None:
            out.append("\\" + command)
            return
        if command == "let":
            self._skip_spaces()
            if self._peek() == "=":
                self.frames[-1][1] += 1
            target = self._read_arg()
            alias = self.macros.get(target[1:]) if target.startswith("\\") else None
            self.macros[name] = alias if alias is not None else Macro(target)
            return
        if command == "DeclareMathOperator":
            self.macros[name] = Macro(f"\\operatorname{'*' if star else ''}{{{self._read_arg()}}}")
            return
        if command in ("def", "gdef", "edef", "xdef"):
            frame = self.frames[-1]
            src, pos = frame[0], frame[1]
            brace = src.find("{", pos)
            params = src[pos:brace] if brace >= 0 else ""
            if brace < 0:
                return
            frame[1] = brace
            body = self._read_group()
            if not re.fullmatch(r"\s*(#[1-9]\s*)*", params):
                self.notes["\\def with delimited parameters (not expanded)"] += 1
                self.macros.pop(name, None)
                return
            self.macros[name] = Macro(body, params.count("#"))
            return
        n = self._read_optional()
        default = self._read_optional() if n is not None else None
        self._skip_spaces()
        body = self._read_group() if self._peek() == "{" else self._read_arg()
        try:
            args = int(n.strip()) if n is not None else 0
        except ValueError:
            args = 0
        if command == "providecommand" and name in self.macros:
            return
        self.macros[name] = Macro(body, max(0, min(9, args)), default)

    def _star(self) -> bool:
        if self._peek() == "*":
            self.frames[-1][1] += 1
            return True
        return False

    def _may_expand(self, name: str, depth: int) -> bool:
        if depth >= MAX_MACRO_DEPTH:
            self.notes[f"macros nested deeper than {MAX_MACRO_DEPTH} (left unexpanded)"] += 1
            return False
        if self.expansions >= MAX_EXPANSIONS or self.expanded_chars >= MAX_EXPANDED_CHARS:
            self.notes["macro expansion stopped at its limit"] += 1
            return False
        return True

    def _expand(self, name: str, depth: int, out: list[str]) -> None:
        macro = self.macros[name]
        args: list[str] = []
        if macro.args:
            if macro.default is not None:
                optional = self._read_optional()
                args.append(macro.default if optional is None else optional)
            while len(args) < macro.args:
                args.append(self._read_arg())

        def substitute(m: re.Match) -> str:
            if m.group(1) == "#":
                return "#"
            k = int(m.group(1))
            value = args[k - 1] if k <= len(args) else ""
            before = macro.body[:m.start()]
            if value[:1].isalpha() and re.search(r"\\[A-Za-z]+$", before):
                return " " + value  # \\mathbf#1 with x is \\mathbf x, not \\mathbfx
            return value

        body = PARAMETER.sub(substitute, macro.body) if macro.args or "#" in macro.body else macro.body
        self.expansions += 1
        self.expanded_chars += len(body)
        self._push(body, depth + 1)

    def _push(self, text: str, depth: int) -> None:
        if text:
            self.frames.append([text, 0, depth])


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

    text = re.sub(r"\$\$.+?\$\$|(?<!\\)\$.+?(?<!\\)\$", hold, text, flags=re.DOTALL)
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"\\ensuremath\s*(?=\{)", text):  # outside math, a macro's \ensuremath is math
        if m.start() < pos:
            continue
        inner = balanced(text, m.end())
        if inner is None:
            continue
        out.append(text[pos:m.start()])
        maths.append(f"${inner}$")
        out.append(f"\ue002{len(maths) - 1}\ue002")
        pos = m.end() + len(inner) + 2
    out.append(text[pos:])
    return "".join(out), maths


def _restore_math(text: str, maths: list[str]) -> str:
    def restore(m: re.Match) -> str:
        span = maths[int(m.group(1))]
        inner = span.strip("$")
        inner = re.sub(r"\\(label|tag|nonumber|notag)\b(\{[^{}]*\})?", "", inner)
        inner = _unwrap(inner, "ensuremath")
        return ("$$" if span.startswith("$$") else "$") + re.sub(r"\s+", " ", inner).strip() + \
            ("$$" if span.startswith("$$") else "$")

    return re.sub("\ue002(\\d+)\ue002", restore, text)


def _unwrap(text: str, command: str) -> str:
    """`\\command{x}` -> `x` (balanced braces), for commands that only mark their argument."""
    pattern = re.compile(rf"\\{command}\s*(?=\{{)")
    while (m := pattern.search(text)) is not None:
        inner = balanced(text, m.end())
        if inner is None:
            break
        text = text[:m.start()] + inner + text[m.end() + len(inner) + 2:]
    return text


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
