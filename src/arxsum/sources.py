"""What an input is (file, directory, stdin, arXiv id) and how to get its bytes and its Document.

`discover()` turns the names a user gave into a flat list, in order, of `Source`s (one paper each)
and `BadInput`s (a name that leads to no paper, with the reason). `Extractor` runs
`arxsum.extract.extract` in worker processes under a per-file time limit, so one pathological PDF
can never hang a batch: a worker that overruns is killed and replaced.
"""

from __future__ import annotations

import functools
import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from arxsum.arxiv import ArxivClient, cache_name, parse_arxiv_id
from arxsum.document import Document, ModelText
from arxsum.errors import InputError, describe

PAPER_SUFFIXES = (".pdf", ".txt", ".md", ".tex")  # what a directory search picks up by default
# ... and LaTeX projects packed as e-prints (a bare .gz is read only when named: .synctex.gz is no paper)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tex.gz")


@dataclass
class Source:
    """One paper to summarize."""

    name: str  # as shown to the user: the path, "-" for stdin, or the arXiv id
    kind: str  # "file", "stdin" or "arxiv"
    path: Path | None = None
    arxiv_id: str | None = None
    # where its output goes under --output-dir, without the format's extension (see assign_outputs)
    rel: PurePosixPath = field(default_factory=lambda: PurePosixPath("stdin"))


@dataclass
class BadInput:
    """A name the user gave that leads to no paper."""

    name: str
    reason: str


# -- discovery ---------------------------------------------------------------------------------

def discover(names: Iterable[str], *, globs: list[str] | None = None,
             exclude: Path | None = None) -> list[Source | BadInput]:
    """Expand the user's names, in order: `-`, files, directories (recursive), arXiv ids and URLs.

    Folder searches skip `exclude` (the output folder), so summaries are never read back as papers.
    """
    found: list[Source | BadInput] = []
    for name in names:
        found.extend(_expand(name, globs, exclude.resolve() if exclude is not None else None))
    return assign_outputs(found)


def read_names(stream) -> list[str]:
    """`--files-from`: one path (or arXiv id) a line; blank lines are ignored."""
    return [line.strip() for line in stream.read().splitlines() if line.strip()]


def _expand(name: str, globs: list[str] | None, exclude: Path | None) -> list[Source | BadInput]:
    if name == "-":
        return [Source(name="-", kind="stdin", rel=PurePosixPath("stdin"))]
    path = Path(name)
    if path.is_dir():
        files = [f for f in walk_papers(path, globs)
                 if exclude is None or not f.resolve().is_relative_to(exclude)]
        files = without_project_parts(files)
        if not files:
            wanted = ", ".join(globs) if globs else ", ".join(PAPER_SUFFIXES)
            return [BadInput(name, f"directory holds no papers ({wanted})")]
        return [Source(name=str(f), kind="file", path=f,
                       rel=PurePosixPath(f.relative_to(path).as_posix()))
                for f in files]
    if path.exists():
        return [Source(name=name, kind="file", path=path, rel=PurePosixPath(path.name))]
    arxiv_id = parse_arxiv_id(name)
    if arxiv_id is not None:
        return [Source(name=name, kind="arxiv", arxiv_id=arxiv_id, rel=PurePosixPath(cache_name(arxiv_id)))]
    return [BadInput(name, "no such file or directory (nor an arXiv id)")]


def walk_papers(root: Path, globs: list[str] | None = None) -> Iterable[Path]:
    """Files under `root`, sorted, hidden files and folders skipped, filtered by suffix or `globs`.

    A glob is matched against the file name and against the path relative to `root`.
    """
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in sorted(files):
            if fname.startswith("."):
                continue
            f = Path(folder) / fname
            rel = f.relative_to(root).as_posix()
            if globs:
                if any(fnmatch(fname, g) or fnmatch(rel, g) for g in globs):
                    yield f
            elif fname.lower().endswith(PAPER_SUFFIXES + ARCHIVE_SUFFIXES):
                yield f


def without_project_parts(files: list[Path]) -> list[Path]:
    """A LaTeX project is one paper, its main file: the files a main file includes (sections,
    figures, its .bib) are not papers, nor is any other .tex in a folder that holds a main file."""
    from arxsum.project import FolderTree, includes_of, is_main_file

    mains = [f for f in files if f.suffix.lower() == ".tex" and is_main_file(f)]
    if not mains:
        return files
    parts: set[Path] = set()
    for main in mains:
        tree = FolderTree(main.parent)
        read = {(main.parent / rel).resolve() for rel in includes_of(tree, main.name)} - {main.resolve()}
        if read:  # a multi-file project: main.pdf beside main.tex is its build, not another paper
            read.add(main.with_suffix(".pdf").resolve())
        parts |= read
    project_dirs = {main.parent.resolve() for main in mains}
    main_set = set(mains)

    def in_project(f: Path) -> bool:
        return any(f.resolve().is_relative_to(d) for d in project_dirs)

    return [f for f in files if f in main_set or (f.resolve() not in parts and
                                                    not (f.suffix.lower() == ".tex" and in_project(f)))]


def assign_outputs(found: list[Source | BadInput]) -> list[Source | BadInput]:
    """Give each Source its output stem: `<dir>/<name>` without the input's suffix.

    `paper.pdf` -> `paper`, so `--output-dir out --format json` writes `out/paper.json`. Inputs that
    would share a stem (`paper.pdf` beside `paper.tex`) keep their suffix (`paper.pdf.json`,
    `paper.tex.json`); any clash left over (same name from two folders) gets `~2`, `~3` in input
    order. The rule depends only on the list of inputs, so a rerun finds the same files (resume).
    """
    sources = [s for s in found if isinstance(s, Source)]
    stems: dict[PurePosixPath, list[Source]] = {}
    for s in sources:
        stems.setdefault(_strip_suffix(s.rel), []).append(s)
    for stem, group in stems.items():
        for s in group:
            s.rel = stem if len(group) == 1 else s.rel
    seen: dict[PurePosixPath, int] = {}
    for s in sources:
        n = seen[s.rel] = seen.get(s.rel, 0) + 1
        if n > 1:
            s.rel = s.rel.with_name(f"{s.rel.name}~{n}")
    return found


def _strip_suffix(rel: PurePosixPath) -> PurePosixPath:
    for suffix in ARCHIVE_SUFFIXES + (".gz",):
        if rel.name.lower().endswith(suffix) and len(rel.name) > len(suffix):
            return rel.with_name(rel.name[: -len(suffix)])
    return rel.with_suffix("") if rel.suffix.lower() in PAPER_SUFFIXES else rel


# -- bytes and documents -----------------------------------------------------------------------

def read_bytes(source: Source, *, stdin: bytes | None = None, arxiv: ArxivClient | None = None) -> bytes:
    """The raw bytes of one input; InputError with a one-line reason when they cannot be had."""
    if source.kind == "stdin":
        return stdin or b""
    if source.kind == "arxiv":
        return (arxiv or ArxivClient()).fetch_pdf(source.arxiv_id or source.name)
    assert source.path is not None
    try:
        return source.path.read_bytes()
    except IsADirectoryError:
        raise InputError("is a directory") from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}") from None


@dataclass(frozen=True)
class ExtractOptions:
    password: str | None = None
    max_pages: int | None = None
    keep_appendix: bool = False
    verbose: bool = False
    normalize: bool = True  # also make the model text (to_model_text); False for --raw
    # The checkpoint's tokenizer files, when they are on this machine (never downloaded for this):
    # its whole words decide line-end hyphens the paper does not, and it counts the model's tokens.
    tokenizer_dir: str | None = None
    # With tokenizer_dir: a PDF's pages are read only until its model text is past this many tokens
    # (and MARGIN_PAGES more, see `arxsum.extract`); None reads every page (up to max_pages).
    token_limit: int | None = None


@dataclass
class Extracted:
    """One input, read: its Document and, unless --raw, the normalised text the model will see."""

    doc: Document
    model_text: ModelText | None
    seconds: float = 0.0


def extract_paper(data: bytes, name: str, options: ExtractOptions) -> Extracted:
    """Extraction and normalisation together, so the per-file time limit covers both."""
    doc = extract_document(data, name, options)
    model_text = None
    if options.normalize:
        from arxsum.normalize import to_model_text

        model_text = to_model_text(doc)
    return Extracted(doc, model_text)


def extract_document(data: bytes, name: str, options: ExtractOptions) -> Document:
    """`arxsum.extract.extract` with our options; `verbose` is passed only where it is accepted."""
    from arxsum.extract import extract

    kwargs = {"password": options.password, "max_pages": options.max_pages,
              "keep_appendix": options.keep_appendix}
    accepted = inspect.signature(extract).parameters
    if "verbose" in accepted:
        kwargs["verbose"] = options.verbose
    vocabulary = model_vocabulary(options.tokenizer_dir)
    if vocabulary.words is not None and "words" in accepted:
        kwargs["words"] = vocabulary.words
    if vocabulary.tokenizer is not None and options.token_limit is not None and "body_tokens" in accepted:
        kwargs["body_tokens"] = BodyTokens(vocabulary.tokenizer, normalize=options.normalize)
        kwargs["token_limit"] = options.token_limit
    return extract(data, name, **kwargs)


@dataclass(frozen=True)
class ModelVocabulary:
    """What extraction takes from the checkpoint's tokenizer files: its whole words and the tokenizer."""

    words: frozenset[str] | None = None
    tokenizer: object | None = None  # arxsum.tokenizer.Tokenizer


@functools.lru_cache(maxsize=4)
def model_vocabulary(tokenizer_dir: str | None) -> ModelVocabulary:
    """Read once per process (each extraction worker has its own); nothing when the files are not
    there or cannot be read: extraction then goes on without them, as before."""
    if tokenizer_dir is None:
        return ModelVocabulary()
    from arxsum.vocab import model_words

    try:
        from arxsum.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(Path(tokenizer_dir))
    except Exception:  # noqa: BLE001 - a missing or broken tokenizer only costs the page cut
        tokenizer = None
    return ModelVocabulary(model_words(tokenizer_dir), tokenizer)


class BodyTokens:
    """A body's length in model tokens, counted as the runner counts the model's input: the
    training text (`to_model_text`), or the body itself with --raw."""

    def __init__(self, tokenizer, *, normalize: bool) -> None:
        self.tokenizer, self.normalize = tokenizer, normalize

    def __call__(self, body: str) -> int:
        if self.normalize:
            from arxsum.normalize import to_training_text

            body = to_training_text(body)[0]
        return len(self.tokenizer.encode(body))

    def rough(self, text: str) -> int:
        """Raw text in tokens, not normalised (a tenth of the time): when to measure the body."""
        return len(self.tokenizer.encode(text))


def _extraction_name(source: Source) -> str:
    if source.kind == "arxiv" and source.arxiv_id:
        return source.arxiv_id
    return source.name


class Extractor:
    """Reads and extracts inputs in the background, `workers` at a time, each under `timeout` s.

    `submit(source)` returns a Future of an `Extracted` (or of an InputError). With `timeout` > 0 each
    extraction runs in a worker process that is killed when it overruns (pypdf has had many
    crafted-file hangs); with `timeout` == 0 extraction runs in-process, with no limit.
    """

    def __init__(self, options: ExtractOptions, *, timeout: float = 120.0, workers: int = 2,
                 stdin: bytes | None = None, arxiv: ArxivClient | None = None) -> None:
        self.options = options
        self.timeout = timeout
        self.stdin = stdin
        self.arxiv = arxiv
        self._threads = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="arxsum-extract")
        self._local = threading.local()
        self._procs: list[_WorkerProcess] = []
        self._procs_lock = threading.Lock()
        self._closed = False

    def submit(self, source: Source) -> Future:
        return self._threads.submit(self._extract_one, source)

    def _extract_one(self, source: Source) -> Extracted:
        if self._closed:
            raise InputError("interrupted")
        name = _extraction_name(source)
        if source.kind == "arxiv":
            paper = self._extract_arxiv(source, name)
        elif self.timeout and self.timeout > 0:
            # files are read by the worker: no copy through the pipe, and a stuck read is timed too
            data = source.path if source.kind == "file" else read_bytes(source, stdin=self.stdin, arxiv=self.arxiv)
            paper = self._extract(data, name)
        else:
            paper = self._extract(read_bytes(source, stdin=self.stdin, arxiv=self.arxiv), name)
        paper.doc.source = source.name
        return paper

    def _extract(self, data: bytes | Path, name: str) -> Extracted:
        """One input's bytes (or its file) through extraction, in a worker under the time limit."""
        started = time.perf_counter()
        if self.timeout and self.timeout > 0:
            paper = self._worker().extract(data, name, self.options, self.timeout)
        else:
            if isinstance(data, Path):
                data = read_bytes(Source(name=name, kind="file", path=data))
            paper = extract_paper(data, name, self.options)
        paper.seconds = time.perf_counter() - started
        return paper

    def _extract_arxiv(self, source: Source, name: str) -> Extracted:
        """An arXiv paper from its LaTeX source when the client's `source` preference allows it and the
        source yields a body; else from its PDF (a PDF-only submission's e-print is that PDF)."""
        client = self.arxiv or ArxivClient()
        arxiv_id = source.arxiv_id or source.name
        notes: list[str] = []
        if client.source != "pdf":
            try:
                data = client.fetch_source(arxiv_id)
            except InputError as e:
                if client.source == "latex":
                    raise
                data, notes = None, [f"no LaTeX source ({e}); read the PDF"]
            if data is not None and data.lstrip().startswith(b"%PDF-"):
                if client.source == "latex":
                    raise InputError(f"arXiv has no LaTeX source for {arxiv_id} (a PDF-only submission); "
                                     "--source pdf reads the PDF")
                return self._extract(data, name)
            if data is not None:
                try:
                    return self._extract(data, name)
                except InputError as e:
                    if client.source == "latex":
                        raise
                    notes = [f"LaTeX source not usable ({e}); read the PDF"]
        paper = self._extract(client.fetch_pdf(arxiv_id), name)
        paper.doc.warnings = notes + paper.doc.warnings
        return paper

    def _worker(self) -> _WorkerProcess:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = self._local.worker = _WorkerProcess()
            with self._procs_lock:
                self._procs.append(worker)
        return worker

    def close(self) -> None:
        """Stop: cancel what has not started, kill the workers (they may be stuck in pypdf)."""
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._procs_lock:
            for worker in self._procs:
                worker.kill()

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mp_context():
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["arxsum.sources"])
        return ctx
    return multiprocessing.get_context("spawn")


class _WorkerProcess:
    """One extraction process, reused for many files; killed and replaced after a timeout."""

    def __init__(self) -> None:
        self.proc = None
        self.conn = None

    def _start(self) -> None:
        ctx = _mp_context()
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="arxsum-extract")
        proc.start()
        child.close()
        self.conn, self.proc = conn, proc

    def extract(self, data: bytes | Path, name: str, options: ExtractOptions, timeout: float) -> Extracted:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        try:
            self.conn.send((data, name, options))
            ready = self.conn.poll(timeout)
        except (OSError, EOFError):
            ready = True  # the worker died: recv() below says so
        if not ready:
            self.kill()
            raise InputError(f"extraction took longer than {timeout:g}s (--timeout): damaged or pathological file")
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.exitcode if self.proc is not None else None
            self.kill()
            raise InputError(f"extraction crashed (worker exit code {code}): damaged or pathological file") from None
        if status == "ok":
            return value
        raise InputError(value)

    def kill(self) -> None:
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        if conn is not None:
            conn.close()


def _worker_main(conn) -> None:
    """The worker's loop: (bytes or a file's path, name, options) in, ("ok", Extracted) or ("err", reason) out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")  # stderr belongs to the parent's one-line reports
    while True:
        try:
            data, name, options = conn.recv()
        except (EOFError, OSError):
            return
        if options.verbose and not logging.getLogger().handlers:
            warnings.simplefilter("default")
            logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="pypdf: %(message)s")
        try:
            if isinstance(data, Path):
                data = read_bytes(Source(name=name, kind="file", path=data))
            reply = ("ok", extract_paper(data, name, options))
        except InputError as e:
            reply = ("err", str(e))
        except Exception as e:  # a bug or a pypdf crash on a crafted file: one line, the batch goes on
            reply = ("err", f"extraction failed ({describe(e)})")
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
