"""LaTeX sources as papers come: multi-file projects, e-print archives, macros (issue 15).

The shared project (`samples/latex/robust-sls-matni/`) is read as a folder, as its main file, as an
e-print .tar.gz and as the authors' zip; synthetic projects cover nested includes, includes that try
to leave the project, loops, missing files, bombs and archives with two candidate main files.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from arxsum import archive
from arxsum.errors import InputError
from arxsum.extract import extract
from arxsum.latex import expand_macros, to_text
from arxsum.normalize import to_model_text, to_training_text
from arxsum.project import read_latex_input

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
if not SAMPLES.is_dir():
    SAMPLES = Path("/work/shared/samples")
PROJECT = SAMPLES / "latex" / "robust-sls-matni"
needs_project = pytest.mark.skipif(not (PROJECT / "project" / "main.tex").is_file(), reason="shared project absent")
SECTION_FILES = ["introduction", "notation", "op-sls", "performance", "extensions", "experiments", "conclusion"]

MAIN = r"""\documentclass{article}
\newcommand{\sys}{SysName}
\begin{document}
\title{A Test}
\begin{abstract}An abstract.\end{abstract}
%s
\bibliography{refs}
\end{document}
"""


def words(text: str) -> list[str]:
    return [w for w in text.split() if re.fullmatch(r"[a-z]+", w)]


def coverage(reference: str, body: str) -> float:
    """Share of the reference's words (with multiplicity) found in the body, as the extraction checks count."""
    ref, out = Counter(words(reference)), Counter(words(body))
    return sum(min(k, out[w]) for w, k in ref.items()) / sum(ref.values())


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def targz(files: dict[str, bytes | str], extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def body(doc) -> str:
    return " ".join(doc.body.split())


# --- includes -------------------------------------------------------------------------------

def test_nested_includes_in_subfolders_with_and_without_braces(tmp_path):
    root = write(tmp_path / "p", {
        "main.tex": MAIN % "\\section{Intro}\n\\input{sections/intro}\n\\section{More}\n\\input sections/more\n"
                           "\\include{sections/last.tex}",
        "sections/intro.tex": "Intro words here. \\input{sections/deep/detail}",
        "sections/deep/detail.tex": "Detail words about \\sys.",
        "sections/more.tex": "More words. \\input{sibling}",  # found beside the including file
        "sections/sibling.tex": "Sibling words.",
        "sections/last.tex": "Last words.\n\\endinput\nAfter endinput.",
    })
    doc = read_latex_input(None, "p", path=root)
    assert body(doc) == "Intro words here. Detail words about SysName. More words. Sibling words. Last words."
    assert doc.sections == ["Intro", "More"]
    assert not any("include" in k for k in doc.dropped)


def test_the_main_file_alone_finds_its_includes_beside_it(tmp_path):
    root = write(tmp_path / "p", {"main.tex": MAIN % "\\section{A}\\input{a}", "a.tex": "Words of a."})
    doc = extract((root / "main.tex").read_bytes(), str(root / "main.tex"))
    assert body(doc) == "Words of a."


def test_includeonly_subfile_import_and_subimport(tmp_path):
    root = write(tmp_path / "p", {
        "main.tex": (MAIN % "\\section{A}\\include{one}\\include{two}\\subfile{parts/sub}"
                     "\\import{chapters/}{ch}\\subimport{chapters/}{ch}").replace(
                         "\\begin{document}", "\\includeonly{one}\n\\begin{document}"),
        "one.tex": "One.", "two.tex": "Two.",
        "parts/sub.tex": "\\documentclass[../main]{subfiles}\n\\begin{document}\nSub piece \\input{near}\n\\end{document}",
        "parts/near.tex": "near.",
        "chapters/ch.tex": "Chapter \\input{inner}",  # inside \import, names are relative to chapters/
        "chapters/inner.tex": "inner.",
    })
    doc = read_latex_input(None, "p", path=root)
    assert body(doc) == "One. Sub piece near. Chapter inner. Chapter inner."
    assert doc.dropped == {"\\include left out by \\includeonly: two": 1}


def test_a_missing_file_and_a_loop_are_notes_not_failures(tmp_path):
    root = write(tmp_path / "p", {
        "main.tex": MAIN % "\\section{A}\\input{a}\\input{gone}",
        "a.tex": "Text of a. \\input{b}", "b.tex": "Text of b. \\input{a}",
    })
    doc = read_latex_input(None, "p", path=root)
    assert body(doc) == "Text of a. Text of b."
    assert doc.dropped["include not found: gone"] == 1
    assert doc.dropped["include loop (not followed): a.tex -> b.tex -> a.tex"] == 1
    assert doc.warnings == []
    loud = read_latex_input(None, "p", path=root, verbose=True)
    assert "include not found: gone" in loud.warnings


def test_includes_that_leave_the_project_are_not_read(tmp_path):
    secret = write(tmp_path, {"secret.tex": "SECRET TEXT"})
    root = write(tmp_path / "p", {
        "main.tex": MAIN % ("\\section{A} Safe. \\input{../secret} \\input{%s} \\input{link} \\input{sub/../../secret}"
                            % (secret / "secret.tex")),
    })
    os.symlink(tmp_path / "secret.tex", root / "link.tex")
    doc = read_latex_input(None, "p", path=root)
    assert "SECRET" not in doc.body and body(doc) == "Safe."
    notes = [k for k in doc.dropped if k.startswith("include outside the project")]
    assert len(notes) == 4, doc.dropped


# --- archives -------------------------------------------------------------------------------

def test_an_eprint_tar_gz_with_a_top_folder_reads_like_the_folder(tmp_path):
    files = {"main.tex": MAIN % "\\section{A}\\input{sec/a}", "sec/a.tex": "Archived words."}
    data = targz({f"top/{k}": v for k, v in files.items()})
    doc = extract(data, "2101.00001")
    assert body(doc) == "Archived words." and doc.title == "A Test" and doc.kind == "tex"


def test_a_zip_skips_macos_junk_and_a_single_gzipped_tex_is_a_paper():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("arxiv/main.tex", MAIN % "\\section{A}\\input{a}")
        zf.writestr("arxiv/a.tex", "Zipped words.")
        zf.writestr("__MACOSX/arxiv/._main.tex", "\x00\x05junk")
        zf.writestr("arxiv/._a.tex", "\x00\x05junk")
    doc = extract(buf.getvalue(), "src.zip")
    assert body(doc) == "Zipped words." and doc.dropped["macOS resource-fork members skipped"] == 2
    single = gzip.compress((MAIN % "\\section{A} One file.").encode())
    assert body(extract(single, "2101.00002")) == "One file."


def test_archive_members_with_unsafe_names_links_and_devices_are_not_read():
    link = tarfile.TarInfo("a.tex")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("dev.tex")
    device.type = tarfile.CHRTYPE
    data = targz({"main.tex": MAIN % "\\section{A} Kept. \\input{a} \\input{evil} \\input{dev}",
                  "../evil.tex": "EVIL", "/abs.tex": "EVIL"}, extra=[link, device])
    unpacked = archive.unpack(data, "x.tar.gz")
    assert sorted(unpacked.files) == ["main.tex"]
    assert unpacked.dropped["archive members with unsafe names (absolute or ..), not read"] == 2
    assert unpacked.dropped["archive links and special files ignored"] == 2
    doc = extract(data, "x.tar.gz")
    assert body(doc) == "Kept." and "EVIL" not in doc.body


def test_a_bomb_archive_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 1 << 20)
    bomb = targz({"main.tex": MAIN % "x", "zeros.tex": b"\0" * (3 << 20)})
    assert len(bomb) < 20_000
    with pytest.raises(InputError, match="more than 1 MiB") as info:
        extract(bomb, "bomb.tar.gz")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="more than 1 MiB"):
        extract(gzip.compress(b"\0" * (3 << 20)), "bomb.gz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("main.tex", b"%" * (3 << 20))
    with pytest.raises(InputError, match="more than 1 MiB"):
        extract(buf.getvalue(), "bomb.zip")
    monkeypatch.setattr(archive, "MAX_MEMBERS", 5)
    with pytest.raises(InputError, match="more than 5 files"):
        extract(targz({f"f{i}.tex": "x" for i in range(6)}), "many.tar.gz")


def test_damaged_archives_are_one_line():
    data = targz({"main.tex": MAIN % "\\section{A} x"})
    with pytest.raises(InputError, match="damaged or unreadable archive") as info:
        extract(data[: len(data) // 2], "cut.tar.gz")
    assert "\n" not in str(info.value)


def test_two_candidate_mains_the_named_one_the_including_one_or_an_error(tmp_path):
    other = MAIN % "\\section{A} Other paper."
    named = targz({"main.tex": MAIN % "\\section{A} The main one.", "response.tex": other})
    assert body(extract(named, "a.tar.gz")) == "The main one."
    including = targz({"x.tex": MAIN % "\\section{A} Includer. \\input{y}",
                       "y.tex": MAIN.replace("%s", "Included.")})
    assert body(extract(including, "b.tar.gz")).startswith("Includer.")
    with pytest.raises(InputError, match=r"several main \.tex files .*\(one\.tex, two\.tex\)"):
        extract(targz({"one.tex": other, "two.tex": other}), "c.tar.gz")
    with pytest.raises(InputError, match="no main .tex file"):
        extract(targz({"notes.tex": "no document here", "more.tex": "nor here"}), "d.tar.gz")


# --- macros and text commands -------------------------------------------------------------------

def test_macros_with_arguments_defaults_def_and_let_are_expanded():
    text, notes = expand_macros(
        r"\newcommand{\pair}[2]{(#1, #2)}\newcommand{\opt}[2][dflt]{<#1|#2>}\def\tw#1#2{#2#1}"
        r"\providecommand{\pair}{NOT}\renewcommand*\R{\mathbb{R}}\let\RR=\R\DeclareRobustCommand{\rb}{robust}"
        r" \pair{a}{b} \opt{x} \opt[y]{z} \tw12 \RR \rb")
    assert text.split() == ["(a,", "b)", "<dflt|x>", "<y|z>", "21", r"\mathbb{R}", "robust"]
    assert not notes


def test_recursive_and_exploding_macros_stop_at_their_caps():
    text, notes = expand_macros(r"\def\a{\a} \a")
    assert text.strip() == r"\a" and any("deeper than" in k for k in notes)
    text, notes = expand_macros(r"\def\a{x\a} \a")
    assert text.count("x") == 32


def test_text_macros_read_as_words_and_math_macros_stay_in_their_xmath():
    source = (r"\documentclass{article}\newcommand{\method}{FastSum}\newcommand{\R}{\ensuremath{\mathbb{R}}}"
              r"\newcommand{\norm}[1]{\lVert #1 \rVert}\newcommand{\vect}[1]{\mathbf{#1}}"
              r"\begin{document}\section{Intro} We call it \method, with $\norm{\vect x} \in \R$ in \R."
              r" It is \emph{fast}, \textbf{bold}, \textit{it}, \texttt{tt} and \mbox{boxed}; see"
              r" \cref{s}, \Cref{s}, \autoref{s} and \eqref{e}.\todo{fix this}\todo[inline]{and this}"
              r"\footnote{A footnote.}\begin{comment}hidden\end{comment} End.\end{document}")
    doc = extract(source.encode(), "m.tex")
    assert "FastSum" in doc.body and "\\" not in to_model_text(doc).text.replace("@xmath", "")
    mt = to_model_text(doc)
    assert mt.text == ("we call it fastsum , with @xmath0 in @xmath1 . it is fast , bold , it , tt and boxed ; "
                       "see , , and . end .")
    assert mt.math[0] == r"\lVert \mathbf{x} \rVert \in \mathbb{R}" and mt.math[1] == r"\mathbb{R}"


def test_toggles_pick_their_branch():
    text, _ = expand_macros(r"\newtoggle{draft}\togglefalse{draft}\newcommand{\chg}[1]{\iftoggle{draft}{RED #1}{#1}}"
                            r" \chg{final text}")
    assert text.strip() == "final text"


# --- the shared real project ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_forms():
    folder = PROJECT / "project"
    return {
        "folder": read_latex_input(None, str(folder), path=folder),
        "main.tex": extract((folder / "main.tex").read_bytes(), str(folder / "main.tex")),
        "tar.gz": extract((PROJECT / "robust-sls-matni-eprint.tar.gz").read_bytes(), "eprint.tar.gz"),
        "zip": extract((PROJECT / "robust-sls-matni-authors-arxiv.zip").read_bytes(), "arxiv.zip"),
    }


@needs_project
def test_the_shared_project_reads_the_same_as_folder_main_file_and_eprint(shared_forms):
    texts = {form: to_model_text(doc).text for form, doc in shared_forms.items()}
    assert texts["folder"] == texts["main.tex"] == texts["tar.gz"]
    reference = " ".join(to_training_text(to_text((PROJECT / "project" / f"{s}.tex").read_text()))[0]
                         for s in SECTION_FILES)
    assert coverage(reference, texts["folder"]) >= 0.95
    assert "\\" not in texts["folder"] and "@xmath" in texts["folder"] and "@xcite" in texts["folder"]
    doc = shared_forms["folder"]
    assert doc.title == "Robust Performance Guarantees for System Level Synthesis"
    assert doc.sections[:2] == ["Introduction", "Notation and Preliminaries"] and len(doc.sections) >= 7


@needs_project
def test_the_authors_zip_reads_the_files_its_own_main_includes(shared_forms):
    # the zip is an earlier upload: its main.tex has no Experiments section
    doc = shared_forms["zip"]
    included = [s for s in SECTION_FILES if s != "experiments"]
    reference = " ".join(to_training_text(to_text((PROJECT / "project" / f"{s}.tex").read_text()))[0]
                         for s in included)
    assert coverage(reference, to_model_text(doc).text) >= 0.95
    assert doc.dropped["macOS resource-fork members skipped"] == 14


def test_an_include_bomb_stops_at_the_size_limit(tmp_path):
    files = {"main.tex": MAIN % ("\\section{A} Start. " + "\\input{b}" * 200)}
    files |= {"b.tex": "\\input{c}" * 200, "c.tex": "\\input{d}" * 200, "d.tex": ""}
    root = write(tmp_path / "p", files)
    doc = read_latex_input(None, "p", path=root)
    assert body(doc) == "Start." and doc.dropped["includes past the size limit (not read)"] > 0


def test_macros_kept_in_the_projects_own_package_are_expanded(tmp_path):
    root = write(tmp_path / "p", {
        "main.tex": (MAIN % "\\section{A} We use \\tool{} on $\\vx$.").replace(
            "\\begin{document}", "\\usepackage[utf8]{inputenc,mymacros}\n\\begin{document}"),
        "mymacros.sty": "\\ProvidesPackage{mymacros}\\RequirePackage{amsmath}\\newcommand{\\tool}{ToolKit}"
                        "\\newcommand{\\vx}{\\mathbf{x}}",
    })
    doc = read_latex_input(None, "p", path=root)
    assert body(doc) == "We use ToolKit on $\\mathbf{x}$."
