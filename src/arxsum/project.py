"""LaTeX projects: a folder, an archive or a lone `.tex` -> its main file with every include in place.

A project is a tree of files: a folder on disk (`FolderTree`) or an archive's files in memory
(`MemoryTree`, from `arxsum.archive`). `find_main` picks the file to compile (the one with
`\\documentclass` and `\\begin{document}`), `flatten` replaces `\\input`, `\\include`, `\\subfile`,
`\\import` and `\\subimport` by the files they name, as TeX would, and `latex_project` turns the
result into a Document.

Sources are untrusted: a name that resolves outside the project's root (absolute, `..`, a symlink
leading out) is never read, and a missing file, a loop or a runaway depth is a note in the
Document's `dropped` (and its warnings with --verbose), never a failure of the paper.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from arxsum.archive import ARCHIVE_SUFFIXES, is_archive, is_junk, unpack
from arxsum.document import Document
from arxsum.errors import InputError
from arxsum.latex import latex_document, strip_comments

MAX_INCLUDE_DEPTH = 24
MAX_FLAT_CHARS = 32 * 2**20  # a project flattened past this (includes of includes) stops growing
INCLUDE_COST = 1024  # characters each include counts against MAX_FLAT_CHARS besides its own
MAX_FILE_BYTES = 16 * 2**20  # one source file larger than this is not a paper's text
MAIN_NAMES = ("main", "ms", "paper")
TEX_SUFFIXES = (".tex", ".ltx", ".latex")

# \input{f} \input f \include{f} \subfile{f} \import{dir}{f} \subimport{dir}{f} (and import's aliases)
INCLUDE = re.compile(
    r"\\(?P<cmd>input|include|subfile|subfileinclude|import|subimport|inputfrom|subinputfrom|includefrom|"
    r"subincludefrom)(?![A-Za-z@])\*?\s*"
    r"(?:\{(?P<dir>[^{}]*)\}\s*(?=\{))?"
    r"(?:\{(?P<braced>[^{}]*)\}|(?P<bare>[^\s{}\\%]+))"
)
PACKAGE = re.compile(r"\\(?:usepackage|RequirePackage)\s*(?:\[[^\]]*\])?\s*\{(?P<names>[^{}]*)\}")
INCLUDEONLY = re.compile(r"\\includeonly\s*\{([^{}]*)\}")
ENDINPUT = re.compile(r"\\endinput(?![A-Za-z@])")
DOCUMENTCLASS = re.compile(r"\\document(?:class|style)\s*(?:\[[^\]]*\])?\s*\{\s*([^}\s]*)\s*\}")
BEGIN_DOCUMENT = "\\begin{document}"
GRAPHICS = re.compile(r"\\includegraphics\*?\s*(?:\[[^\]]*\])*\s*\{([^{}]*)\}")
BIBLIOGRAPHY = re.compile(r"\\bibliography\s*\{([^{}]*)\}")
GRAPHICS_SUFFIXES = ("", ".pdf", ".png", ".jpg", ".jpeg", ".eps", ".ps", ".gif")


# -- trees ------------------------------------------------------------------------------------

class FolderTree:
    """A project on disk, confined to `root`: names are resolved (symlinks too) and must stay inside."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real = root.resolve()
        self._kinds: dict[str, str] = {}

    def _inside(self, rel: str) -> Path | None:
        path = (self.root / rel).resolve()
        return path if path.is_relative_to(self._real) else None

    def kind(self, rel: str) -> str:
        """'file', 'missing' or 'outside' (resolves, through a symlink or not, out of the root)."""
        if rel not in self._kinds:
            self._kinds[rel] = self._kind(rel)
        return self._kinds[rel]

    def _kind(self, rel: str) -> str:
        path = self._inside(rel)
        if path is None:
            return "outside" if (self.root / rel).exists() or (self.root / rel).is_symlink() else "missing"
        return "file" if path.is_file() else "missing"

    def read(self, rel: str) -> bytes:
        path = self._inside(rel)
        if path is None or not path.is_file():
            raise InputError(f"{rel}: not in the project")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{rel}: larger than {MAX_FILE_BYTES // 2**20} MiB")
        return path.read_bytes()

    def names(self) -> list[str]:
        """Every file under the root (no hidden folders), as posix paths relative to it, sorted."""
        found = []
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if any(p.startswith(".") for p in rel.split("/")[:-1]) or is_junk(rel):
                continue
            if path.is_file() and self.kind(rel) == "file":
                found.append(rel)
        return found


class MemoryTree:
    """An archive's files, already confined by `arxsum.archive.unpack`."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def kind(self, rel: str) -> str:
        return "file" if rel in self.files else "missing"

    def read(self, rel: str) -> bytes:
        if rel not in self.files:
            raise InputError(f"{rel}: not in the archive")
        return self.files[rel]

    def names(self) -> list[str]:
        return sorted(self.files)


# -- reading text ------------------------------------------------------------------------------

def decode_tex(data: bytes) -> tuple[str, bool]:
    """(text, was_utf8): TeX sources are UTF-8, or Latin-1 in older papers."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("latin-1"), False


def _text(tree, rel: str) -> str:
    return strip_comments(decode_tex(tree.read(rel))[0])


# -- the main file ------------------------------------------------------------------------------

def is_main(text: str) -> bool:
    """A file TeX can compile on its own; `subfiles` and `standalone` pieces do not count."""
    m = DOCUMENTCLASS.search(text)
    return bool(m) and BEGIN_DOCUMENT in text and m.group(1) not in ("subfiles", "standalone")


def is_main_file(path: Path) -> bool:
    """Whether the .tex file at `path` is a main file (read only when it is of a sane size)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return False
        return is_main(strip_comments(decode_tex(path.read_bytes())[0]))
    except OSError:
        return False


def find_main(tree, label: str) -> str:
    """The project's main file: the only candidate, else the one named main/ms/paper, else the one
    that includes the others; else an InputError naming the candidates."""
    names = tree.names()
    if len(names) == 1 and not names[0].lower().endswith((".pdf", ".ps")):
        return names[0]  # a single file (arXiv's gzipped one-file sources carry no .tex name)
    texts = {}
    for rel in names:
        if rel.lower().endswith(TEX_SUFFIXES):
            try:
                texts[rel] = _text(tree, rel)
            except InputError:
                continue
    candidates = [rel for rel, text in texts.items() if is_main(text)]
    if not candidates:
        raise InputError(f"no main .tex file (with \\documentclass and \\begin{{document}}) in {label}")
    if len(candidates) == 1:
        return candidates[0]
    top = min(rel.count("/") for rel in candidates)  # the shallowest first: a top folder is fine
    named = [rel for rel in candidates if rel.count("/") == top and
             posixpath.splitext(posixpath.basename(rel))[0].lower() in MAIN_NAMES]
    if len(named) == 1:
        return named[0]
    included = set()
    for rel in candidates:
        included |= set(includes_of(tree, rel)) - {rel}
    roots = [rel for rel in candidates if rel not in included]
    if len(roots) == 1:
        return roots[0]
    shown = ", ".join((roots or candidates)[:6])
    raise InputError(f"several main .tex files in {label} ({shown}): name the one to read")


# -- includes -----------------------------------------------------------------------------------

@dataclass
class Flattened:
    text: str
    files: list[str] = field(default_factory=list)  # every file read, main first
    notes: Counter = field(default_factory=Counter)  # "include not found: x" -> times


def candidates_for(name: str, base: str) -> list[str]:
    """Where TeX looks for `name` from folder `base`: `name.tex` first, then `name` as written."""
    name = name.strip().strip('"')
    if not name:
        return []
    joined = posixpath.join(base, name) if not name.startswith("/") else name
    plain = joined if joined.startswith("/") else posixpath.normpath(joined)
    with_tex = plain if plain.lower().endswith(TEX_SUFFIXES) else plain + ".tex"
    return [with_tex, plain] if with_tex != plain else [plain]


def outside(rel: str) -> bool:
    return rel.startswith("/") or rel == ".." or rel.startswith("../") or bool(re.match(r"^[A-Za-z]:", rel))


def _resolve(tree, name: str, bases: list[str]) -> tuple[str | None, str]:
    """(the file, "") or (None, why): 'outside' or 'missing'."""
    why = "missing"
    for base in bases:
        for rel in candidates_for(name, base):
            if outside(rel):
                why = "outside"
                continue
            kind = tree.kind(rel)
            if kind == "file":
                return rel, ""
            if kind == "outside":
                why = "outside"
    return None, why


def flatten(tree, main: str, *, max_depth: int = MAX_INCLUDE_DEPTH, max_chars: int = MAX_FLAT_CHARS) -> Flattened:
    """The main file with every include replaced by its file's text (comments stripped), as TeX would.

    `\\input`/`\\include` names are relative to the main file's folder (TeX's working folder), with
    the including file's own folder tried next; `\\import{dir}{f}` reads `dir/f` and makes `dir` the
    folder for the includes inside it; `\\subimport` and `\\subfile` are relative to the including
    file. `\\includeonly` limits `\\include`; `\\endinput` ends a file.
    """
    result = Flattened(text="")
    main_dir = posixpath.dirname(main)
    main_text = _text(tree, main)
    only = INCLUDEONLY.search(main_text)
    include_only = {n.strip() for n in only.group(1).split(",")} if only else None
    budget = [max_chars]
    texts: dict[str, str] = {}

    def text_of(rel: str) -> str:
        if rel not in texts:
            texts[rel] = _text(tree, rel)
        return texts[rel]

    def expand(rel: str, text: str, base: str, stack: tuple[str, ...]) -> str:
        end = ENDINPUT.search(text)
        if end:
            text = text[:end.start()]
        here = posixpath.dirname(rel)
        text = PACKAGE.sub(lambda m: local_packages(m, tree, main_dir), text)
        out: list[str] = []
        pos = 0
        for m in INCLUDE.finditer(text):
            out.append(text[pos:m.start()])
            pos = m.end()
            cmd, folder = m.group("cmd"), m.group("dir")
            name = m.group("braced") if m.group("braced") is not None else m.group("bare")
            if cmd in ("import", "inputfrom", "includefrom", "subimport", "subinputfrom", "subincludefrom"):
                if folder is None:
                    out.append(m.group(0))
                    continue
                start = main_dir if cmd in ("import", "inputfrom", "includefrom") else here
                inner_base = posixpath.normpath(posixpath.join(start, folder)) if folder.strip() else start
                bases = [inner_base]
            elif folder is not None:  # \input{a}{b}: the second group is the text after it
                name, pos = folder, m.start("braced") - 1
                bases, inner_base = _bases(cmd, base, here), None
            else:
                bases, inner_base = _bases(cmd, base, here), None
            if budget[0] < 0:
                result.notes["includes past the size limit (not read)"] += 1
                continue
            if cmd == "include" and include_only is not None and name.strip() not in include_only:
                result.notes[f"\\include left out by \\includeonly: {name.strip()}"] += 1
                continue
            found, why = _resolve(tree, name, bases)
            if found is None:
                if why == "outside":
                    result.notes[f"include outside the project (not read): {name.strip()}"] += 1
                else:
                    result.notes[f"include not found: {name.strip()}"] += 1
                continue
            if found in stack:
                chain = " -> ".join((*stack[stack.index(found):], found))
                result.notes[f"include loop (not followed): {chain}"] += 1
                continue
            if len(stack) >= max_depth:
                result.notes[f"includes nested deeper than {max_depth} (not read): {found}"] += 1
                continue
            try:
                inner = text_of(found)
            except InputError as e:
                result.notes[f"include not read: {e}"] += 1
                continue
            if cmd in ("subfile", "subfileinclude"):
                inner = document_part(inner)
            budget[0] -= len(inner) + INCLUDE_COST  # empty files included a billion times cost too
            if budget[0] < 0:
                result.notes["includes past the size limit (not read)"] += 1
                continue
            if found not in result.files:
                result.files.append(found)
            child_base = inner_base if inner_base is not None else base
            out.append("\n" + expand(found, inner, child_base, (*stack, found)) + "\n")
        out.append(text[pos:])
        return "".join(out)

    result.files.append(main)
    result.text = expand(main, main_text, main_dir, (main,))
    return result


def local_packages(m: re.Match, tree, main_dir: str) -> str:
    """`\\usepackage{mymacros}` where the project holds `mymacros.sty`: read like `\\input{mymacros.sty}`
    (papers keep their macros there); packages not in the project stay as they are."""
    names = [n.strip() for n in m.group("names").split(",") if n.strip()]
    local = [n for n in names if not outside(rel := posixpath.normpath(posixpath.join(main_dir, n + ".sty")))
             and tree.kind(rel) == "file"]
    if not local:
        return m.group(0)
    rest = [n for n in names if n not in local]
    kept = f"\\usepackage{{{','.join(rest)}}}" if rest else ""
    return kept + "".join(f"\\input{{{n}.sty}}" for n in local)


def _bases(cmd: str, base: str, here: str) -> list[str]:
    """Folders to look in: TeX's (the main's, or the \\import's) first, then the including file's."""
    first = [here, base] if cmd in ("subfile", "subfileinclude") else [base, here]
    return list(dict.fromkeys(first))


def document_part(text: str) -> str:
    """What a `subfiles` piece adds to the main document: the text inside its document environment."""
    begin = text.find(BEGIN_DOCUMENT)
    if begin < 0:
        return text
    end = text.find("\\end{document}", begin)
    return text[begin + len(BEGIN_DOCUMENT): end if end >= 0 else len(text)]


def includes_of(tree, main: str) -> list[str]:
    """Every file `main` reads, itself included: sources through includes, figures, the .bib/.bbl."""
    try:
        flat = flatten(tree, main)
    except InputError:
        return [main]
    files = list(flat.files)
    base = posixpath.dirname(main)
    for m in GRAPHICS.finditer(flat.text):
        for suffix in GRAPHICS_SUFFIXES:
            rel = posixpath.normpath(posixpath.join(base, m.group(1).strip() + suffix))
            if not outside(rel) and tree.kind(rel) == "file":
                files.append(rel)
                break
    stem = posixpath.splitext(main)[0]
    files += [rel for rel in (stem + ".bbl",) if tree.kind(rel) == "file"]
    for m in BIBLIOGRAPHY.finditer(flat.text):
        for bib in m.group(1).split(","):
            rel = posixpath.normpath(posixpath.join(base, bib.strip() + ".bib"))
            if not outside(rel) and tree.kind(rel) == "file":
                files.append(rel)
    return list(dict.fromkeys(files))


# -- a project as one paper ----------------------------------------------------------------------

def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES) or name.lower().endswith(".gz")


def latex_project(tree, main: str, name: str, *, keep_appendix: bool = False, verbose: bool = False,
                  dropped: Counter | None = None) -> Document:
    """The Document of `main` in `tree`, its includes in place; what was left out goes to `dropped`."""
    flat = flatten(tree, main)
    source = flat.text
    if not decode_tex(tree.read(main))[1]:
        flat.notes["files read as Latin-1 (not UTF-8)"] += 1
    try:
        doc = latex_document(source, name, keep_appendix=keep_appendix)
    except InputError as e:
        missing = [k.split(": ", 1)[1] for k in flat.notes if k.startswith(("include not found", "include outside"))]
        if not missing:
            raise
        raise InputError(f"{e}: its includes were not found ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''}); pass the project's folder or archive") from None
    notes = Counter(dropped or {})
    notes.update(flat.notes)
    doc.dropped = {**doc.dropped, **{k: v for k, v in notes.items() if v}}
    if verbose:
        doc.warnings += [f"{note}" + (f" ({n}x)" if n > 1 else "") for note, n in flat.notes.items()]
    return doc


def read_latex_input(data: bytes | None, name: str, *, path: Path | None = None, keep_appendix: bool = False,
                     verbose: bool = False) -> Document:
    """A LaTeX paper in any of its forms -> Document.

    - a folder (`path` a directory): its main file, found as `find_main` says;
    - an archive (`data` a tar, tar.gz, .gz or zip): the same, in memory;
    - a lone `.tex` (`data` its bytes, `path` the file when it is on disk): the file is the main and
      its folder the project's root, so its includes are found beside it.
    """
    if path is None and data is not None and name not in ("", "-"):
        path = _same_file(Path(name), data)
    if path is not None and path.is_dir():
        tree = FolderTree(path)
        return latex_project(tree, find_main(tree, name), name, keep_appendix=keep_appendix, verbose=verbose)
    assert data is not None
    if is_archive(data, name):
        unpacked = unpack(data, name)
        tree = MemoryTree(unpacked.files)
        return latex_project(tree, find_main(tree, name), name, keep_appendix=keep_appendix, verbose=verbose,
                             dropped=unpacked.dropped)
    if path is not None and path.is_file():
        tree = FolderTree(path.parent)
        return latex_project(tree, path.name, name, keep_appendix=keep_appendix, verbose=verbose)
    tree = MemoryTree({"main.tex": data})  # stdin, or bytes without a folder: includes cannot be found
    return latex_project(tree, "main.tex", name, keep_appendix=keep_appendix, verbose=verbose)


def _same_file(path: Path, data: bytes) -> Path | None:
    """`path` when it is the file `data` was read from (so its folder holds the includes), else None."""
    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
    except OSError:
        pass
    return None
