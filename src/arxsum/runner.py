"""Many inputs, one model: discover -> skip done -> extract -> normalise -> sort by length -> batch ->
summarize (halving the batch on CUDA out-of-memory) -> write -> report.

`run()` is the library entry point behind `arxsum FILES...`; it never raises for one bad input: each
one becomes a failed `Outcome` with a one-line reason, and the batch goes on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import BinaryIO, TextIO

from rich.console import Console

from arxsum.arxiv import ArxivClient
from arxsum.claims import Claims
from arxsum.document import Document, ModelText
from arxsum.errors import ArxsumError, InputError, OptionsError, describe
from arxsum.options import DEFAULT_MAX_PAGES, DEFAULT_TIMEOUT_S, GenerationOptions
from arxsum.sources import BadInput, ExtractOptions, Extractor, Source, discover, read_names
from arxsum.writers import (
    WRITERS,
    AtomicOutputFile,
    DirectorySink,
    OrderedSink,
    Result,
    output_path,
    remove_stale_temps,
)

SORT_WINDOW = 8  # batches of this many are formed from a window of SORT_WINDOW * batch_size inputs
POLL_S = 0.5  # how often a run waiting on inputs that other runs hold looks again


def default_workers(device: str = "cpu") -> int:
    """Extraction processes. With the model on the CPU it needs the cores: 2, up to 4 on machines
    with 8 cores or more. With the model on CUDA the GPU waits on extraction (~0.7 s a paper on one
    fast core, 11+ papers/s on the GPU): every core but two (the driver and the GPU feed), at least 2."""
    cores = usable_cores()
    if device.startswith("cuda"):
        return max(2, cores - 2)
    return max(2, min(4, cores // 2))


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def model_device(device: str) -> str:
    """Where the model will run, known before it is loaded: "cuda..." or "cpu". `auto` asks torch
    only where an NVIDIA driver is present, so a CPU machine starts extracting without importing it."""
    if device != "auto":
        return device
    torch = sys.modules.get("torch")
    if torch is None:
        if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or not nvidia_driver_present():
            return "cpu"
        import torch
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def local_model_dir(model: str | None) -> Path | None:
    """The model's folder when it is on this machine: a directory, or a hub id already in the cache
    (never downloaded here: extraction only borrows its tokenizer files). None otherwise."""
    if not model:
        return None
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        return None
    try:
        import logging

        from huggingface_hub import snapshot_download

        from arxsum.hub import HUB_PATTERNS

        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        return Path(snapshot_download(model, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or no huggingface_hub): extraction goes without
        return None


def model_token_limit(cfg: RunConfig, model_dir: Path | None) -> int | None:
    """The most tokens the model will read of a paper, before it is loaded: --max-input-tokens, else
    its config.json's positions (the model may round that down to a block: reading a little more
    than it reads keeps its input the same)."""
    if cfg.max_input_tokens is not None:
        return cfg.max_input_tokens
    if model_dir is None:
        return None
    import json

    try:
        positions = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return positions if isinstance(positions, int) and positions > 1 else None


def debug() -> bool:
    return os.environ.get("ARXSUM_DEBUG", "") not in ("", "0")


@dataclass
class RunConfig:
    """Everything `arxsum FILES...` takes besides the model itself."""

    inputs: list[str] = field(default_factory=list)
    files_from: str | None = None  # a file of names, one a line, or "-" for stdin
    globs: list[str] | None = None
    format: str = "text"
    output: Path | None = None
    output_dir: Path | None = None
    overwrite: bool = False
    quiet: bool = False
    raw: bool = False
    keep_appendix: bool = False
    password: str | None = None
    verbose: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    max_pages: int | None = DEFAULT_MAX_PAGES
    batch_size: int | None = None  # None: 1 on CPU, from free memory on CUDA
    max_input_tokens: int | None = None  # None: the model's own limit
    options: GenerationOptions = field(default_factory=GenerationOptions)
    workers: int | None = None  # extraction processes; None: default_workers() for the model's device
    device: str = "auto"  # where the model runs (auto, cpu, cuda, cuda:N): sizes the extraction
    model: str | None = None  # its hub id or folder: extraction borrows its tokenizer when it is local
    page_cut: bool = True  # model on CUDA, its tokenizer at hand: read a PDF's pages only as far as it reads
    refill: bool = True  # batches > 1: finished papers' rows go to the next papers (False: batches drain)

    def check(self) -> None:
        if self.format not in WRITERS:
            raise OptionsError(f"unknown format {self.format!r} (choose from {', '.join(WRITERS)})")
        if self.output is not None and self.output_dir is not None:
            raise OptionsError("--output and --output-dir cannot be used together")
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionsError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_input_tokens is not None and self.max_input_tokens < 2:
            raise OptionsError(f"--max-input-tokens must be at least 2, got {self.max_input_tokens}")
        if self.timeout < 0:
            raise OptionsError("--timeout must be 0 (no limit) or more")
        if self.max_pages is not None and self.max_pages < 1:
            raise OptionsError("--max-pages must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise OptionsError(f"extraction workers must be at least 1, got {self.workers}")
        if self.files_from == "-" and "-" in self.inputs:
            raise OptionsError("stdin cannot be both an input (-) and --files-from -")


@dataclass
class Outcome:
    name: str
    status: str = "pending"  # "done", "skipped", "failed" or "elsewhere" (done by another run)
    reason: str = ""
    output: Path | None = None


@dataclass
class RunReport:
    outcomes: list[Outcome]
    interrupted: bool = False
    model_s: float | None = None  # seconds from the model's loading to the end of the run (None: never loaded)
    model_wait_s: float | None = None  # of which it sat idle, waiting for extraction

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 all done (or skipped), 1 some input failed, 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failures else 0


@dataclass
class Job:
    """One paper on its way through the model."""

    index: int
    source: Source
    doc: Document
    text: str  # what the tokenizer sees
    model_text: ModelText | None  # None with --raw; its math and casing turn the summary into prose
    tokens: int  # before truncation
    seconds: float  # extraction time so far


# -- the run, as named steps -----------------------------------------------------------------

def run(cfg: RunConfig, *, load_summarizer: Callable[[], object], stdin: BinaryIO | None = None,
        stdout: TextIO | None = None, console: Console | None = None,
        arxiv: ArxivClient | None = None) -> RunReport:
    """Summarize every input of `cfg`; the model is loaded once, and only if some input needs it.

    With --output-dir, runs on the same folder cooperate: each input is claimed before it is read
    (`arxsum.claims`), those other live runs hold are left to them and waited for at the end."""
    console = console or Console(stderr=True)
    items, report, todo, progress, sink, stdin_bytes = start_run(cfg, stdin, stdout, console)
    engine = Engine(cfg, load_summarizer, progress)
    claims = Claims() if cfg.output_dir is not None else None
    if claims is not None:
        sink = ClaimedSink(sink, claims, report, overwrite=cfg.overwrite)
    workers = cfg.workers or (default_workers(model_device(cfg.device)) if todo else 1)
    try:
        with Extractor(extract_options(cfg), timeout=cfg.timeout, workers=workers,
                       stdin=stdin_bytes, arxiv=arxiv) as extractor:
            def lookahead() -> int:  # inputs claimed and being read ahead of the model
                if claims is None:
                    return len(todo)  # no one to share with: read everything ahead
                return max(2 * workers, SORT_WINDOW * engine.batch_size if engine.batch_size > 1 else 0)

            feed = Feed(todo, items, report, extractor, progress, claims, overwrite=cfg.overwrite,
                        lookahead=lookahead)
            def prepared(window: list[int]) -> list[Job]:
                return [job for i in window if (job := prepare(i, items[i], feed.futures.pop(i), cfg, engine,
                                                              report, sink, progress))]

            for job, result in engine.summarize_all(prepared(window) for window in windows(feed, engine)):
                settle(job, result, report, sink, progress)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        report.model_wait_s, report.model_s = engine.wait_s, engine.loaded_s()
        finish_run(cfg, report, sink, progress, console)
    return report


def start_run(cfg: RunConfig, stdin: BinaryIO | None, stdout: TextIO | None, console: Console):
    """Steps 1-3, shared by `run` and `arxsum.distributed.run_ray`: check the options, gather the
    inputs (bad ones fail at once), skip finished outputs, open progress and the output sink.
    Returns (items, report, todo, progress, sink, stdin_bytes)."""
    cfg.check()
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    items = gather_inputs(cfg, stdin)
    report = RunReport([Outcome(item.name) for item in items])
    for outcome, item in zip(report.outcomes, items, strict=True):
        if isinstance(item, BadInput):
            outcome.status, outcome.reason = "failed", item.reason
    todo = [i for i, item in enumerate(items) if isinstance(item, Source)]
    todo = skip_finished(cfg, items, report, todo)
    progress = Progress.create(console, quiet=cfg.quiet, total=len(todo))
    for o in report.failures:
        progress.failed(o.name, o.reason, counted=False)
    progress.skipped(report.count("skipped"))
    sink = open_sink(cfg, items, report, todo, stdout)
    stdin_bytes = stdin.read() if any(getattr(items[i], "kind", "") == "stdin" for i in todo) else None
    return items, report, todo, progress, sink, stdin_bytes


def finish_run(cfg: RunConfig, report: RunReport, sink, progress: Progress, console: Console) -> None:
    """The closing steps, shared by `run` and `run_ray`: flush the outputs (what was written stays,
    even after an interrupt), stop the progress display, print the report."""
    sink.close()
    progress.close()
    note_model_wait(progress, report)
    write_report(console, report, quiet=cfg.quiet)


def note_model_wait(progress: Progress, report: RunReport) -> None:
    """One line, when the model read several papers: how long it sat idle waiting for extraction."""
    if report.model_s is None or report.model_wait_s is None or report.count("done") < 2:
        return
    share = report.model_wait_s / report.model_s if report.model_s > 0 else 0.0
    progress.note(f"the model waited {report.model_wait_s:.1f} s for extraction ({share:.0%} of the "
                  f"{report.model_s:.1f} s since it loaded)")


def gather_inputs(cfg: RunConfig, stdin: BinaryIO) -> list[Source | BadInput]:
    """Step 1, discover: names from the arguments and --files-from, expanded into papers."""
    names = list(cfg.inputs)
    if cfg.files_from is not None:
        if cfg.files_from == "-":
            names += read_names(_text(stdin))
        else:
            try:
                with open(cfg.files_from, encoding="utf-8") as f:
                    names += read_names(f)
            except (OSError, UnicodeDecodeError) as e:
                raise OptionsError(f"cannot read --files-from {cfg.files_from}: {e}") from None
    if not names:
        raise OptionsError("no inputs: name files, folders or arXiv ids, or - for stdin (see --help)")
    return discover(names, globs=cfg.globs, exclude=cfg.output_dir)


def _text(stream: BinaryIO):
    import io

    data = stream.read()
    return io.StringIO(data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data)


def skip_finished(cfg: RunConfig, items: list, report: RunReport, todo: list[int]) -> list[int]:
    """Step 2, resume: inputs whose output file exists are skipped unless --overwrite."""
    if cfg.output_dir is None:
        return todo
    remove_stale_temps(cfg.output_dir)
    left = []
    for i in todo:
        path = output_path(cfg.output_dir, items[i].rel, cfg.format)
        report.outcomes[i].output = path
        if path.exists() and not cfg.overwrite:
            report.outcomes[i].status = "skipped"
        else:
            left.append(i)
    return left


def open_sink(cfg: RunConfig, items: list, report: RunReport, todo: list[int], stdout: TextIO):
    """Where results go: one file each under --output-dir, else one stream (stdout or -o) in input order."""
    if cfg.output_dir is not None:
        return DirectorySink(cfg.output_dir, cfg.format, {i: report.outcomes[i].output for i in todo})
    # several papers were asked for (even if one was found): a JSON array, `==> name <==` headers
    many = len(items) > 1 or cfg.files_from is not None or any(Path(n).is_dir() for n in cfg.inputs)
    if cfg.output is not None:
        target = AtomicOutputFile(cfg.output)
        return _FileSink(OrderedSink(WRITERS[cfg.format](target.stream, many=many), todo), target)
    return OrderedSink(WRITERS[cfg.format](stdout, many=many), todo)


class _FileSink:
    def __init__(self, sink: OrderedSink, target: AtomicOutputFile) -> None:
        self.sink, self.target = sink, target

    def put(self, index, result) -> None:
        self.sink.put(index, result)

    def close(self) -> None:
        """FILE appears if some summary was written (all of them, or those done before an interrupt)."""
        if self.sink.writer.count:
            self.sink.close()
            self.target.commit()
        else:
            self.target.discard()


def extract_options(cfg: RunConfig) -> ExtractOptions:
    """What extraction needs to know; with the model's folder on this machine, its tokenizer: the
    model's words for line-end hyphens, and, with the model on CUDA, its token count for reading only
    the pages it reads. (That costs ~20% more extraction on a paper it does not cut, and saves
    30-70% on one it does: worth it where the GPU waits on extraction, not where the model on the CPU
    takes ~25 s a paper and extraction the cores it leaves.)"""
    model_dir = local_model_dir(cfg.model)
    tokenizer_dir = str(model_dir) if model_dir is not None else None
    cut = cfg.page_cut and model_device(cfg.device).startswith("cuda")
    return ExtractOptions(password=cfg.password, max_pages=cfg.max_pages, keep_appendix=cfg.keep_appendix,
                          verbose=cfg.verbose, normalize=not cfg.raw, tokenizer_dir=tokenizer_dir,
                          token_limit=model_token_limit(cfg, model_dir) if cut else None)


def windows(indices: Iterable[int], engine: Engine) -> Iterator[list[int]]:
    """Inputs in input order, a window at a time; sorting by length happens inside a window.

    Batches of one need no sorting, so their window is one input: the first summary comes as soon
    as the first paper is read. Larger batches are formed from SORT_WINDOW batches' worth of inputs.
    """
    it = iter(indices)
    while window := list(islice(it, window_size(engine))):
        yield window


def window_size(engine: Engine) -> int:
    """1 for batches of one; a batch's worth when batches are refilled (a batch starts as soon as its
    papers are read, and papers join it as rows free up, so a longer wait to sort more buys little);
    SORT_WINDOW batches' worth when they drain."""
    if engine.batch_size <= 1:
        return 1
    return engine.batch_size if engine.refills() else SORT_WINDOW * engine.batch_size


class Feed:
    """The inputs to summarize, in order, each claimed (with claims) and sent to extraction at most
    `lookahead()` inputs ahead of the model.

    An input another live run holds is set aside; once the rest is done, the run waits on those:
    each is done when its output appears (written by the other run), or becomes ours when its claim
    is released (the other run failed it or stopped) or goes stale (the other run died).
    """

    def __init__(self, todo: list[int], items: list, report: RunReport, extractor: Extractor, progress: Progress,
                 claims: Claims | None, *, overwrite: bool, lookahead: Callable[[], int]) -> None:
        self.items, self.report, self.extractor, self.progress = items, report, extractor, progress
        self.claims, self.overwrite, self.lookahead = claims, overwrite, lookahead
        self.pending = deque(todo)
        self.ready: deque[int] = deque()
        self.futures: dict[int, Future] = {}
        self.waiting: dict[int, object] = {}  # index -> the Owner holding it
        self.before = {i: _mtime(report.outcomes[i].output) for i in todo} if claims else {}

    def __iter__(self) -> Iterator[int]:
        while True:
            while self.pending and len(self.ready) < max(1, self.lookahead()):
                self._offer(self.pending.popleft())
            if self.ready:
                yield self.ready.popleft()
            elif self.waiting:
                self.progress.waiting(sorted({owner.describe() for owner in self.waiting.values()}),
                                      len(self.waiting))
                time.sleep(POLL_S)
                for i in list(self.waiting):
                    self._offer(i)
            else:
                return

    def _offer(self, i: int) -> None:
        if self.claims is not None:
            output = self.report.outcomes[i].output
            if self._written_elsewhere(i):
                return self._elsewhere(i)
            owner = self.claims.acquire(output)
            if owner is not None:
                self.waiting[i] = owner
                return
            if self._written_elsewhere(i):  # finished by another run just before we claimed it
                self.claims.release(output)
                return self._elsewhere(i)
            self.waiting.pop(i, None)
        self.futures[i] = self.extractor.submit(self.items[i])
        self.ready.append(i)

    def _written_elsewhere(self, i: int) -> bool:
        """Its output appeared during this run (with --overwrite: changed), so another run wrote it."""
        now = _mtime(self.report.outcomes[i].output)
        return now is not None and (now != self.before[i] if self.overwrite else True)

    def _elsewhere(self, i: int) -> None:
        owner = self.waiting.pop(i, None)
        outcome = self.report.outcomes[i]
        outcome.status, outcome.reason = "elsewhere", owner.describe() if owner is not None else "another run"
        self.progress.elsewhere(outcome.name, outcome.reason)


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except OSError:
        return None


class ClaimedSink:
    """A DirectorySink that gives an input's claim back once its file is written (or it failed), and
    every claim when the run ends; then it sweeps claims that dead runs left beside finished outputs."""

    def __init__(self, sink, claims: Claims, report: RunReport, *, overwrite: bool) -> None:
        self.sink, self.claims, self.report, self.overwrite = sink, claims, report, overwrite

    def put(self, index: int, result) -> None:
        try:
            self.sink.put(index, result)
        finally:
            self.claims.release(self.report.outcomes[index].output)

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            self.claims.close()
            self.claims.sweep([o.output for o in self.report.outcomes if o.output is not None],
                              overwrite=self.overwrite)


def prepare(index: int, source: Source, future: Future, cfg: RunConfig, engine: Engine,
            report: RunReport, sink, progress: Progress) -> Job | None:
    """Steps 3-4, read/extract and normalise (both in the Extractor, under the time limit), count
    tokens: a Job, or None after recording the failure. --raw: the extracted body, untouched."""
    try:
        progress.phase(f"{source.name}: reading")
        with engine.waiting():
            paper = future.result()
        doc, seconds = paper.doc, paper.seconds
        for warning in doc.warnings:
            progress.note(f"{source.name}: {warning}")
        text = doc.body if cfg.raw else paper.model_text.text
        if not text.strip():
            raise InputError("no text left after extraction")
    except Exception as e:
        if debug() and not isinstance(e, InputError):
            raise
        fail(index, _failure_reason(e), report, sink, progress)
        return None
    engine.load()  # a model or option problem concerns every input: it stops the run with its message
    try:
        tokens = engine.count_tokens(text)
    except Exception as e:
        if debug():
            raise
        fail(index, _failure_reason(e), report, sink, progress)
        return None
    return Job(index, source, doc, text, None if cfg.raw else paper.model_text, tokens, seconds)


def make_batches(jobs: list[Job], batch_size: int) -> Iterator[list[Job]]:
    """Step 5, sort by token length (longest first, so an OOM shows early) and group.

    With batches of one there is no padding to save: input order is kept, so stdout streams.
    """
    ordered = sorted(jobs, key=lambda j: -j.tokens) if batch_size > 1 else jobs
    for start in range(0, len(ordered), max(1, batch_size)):
        yield ordered[start:start + batch_size]


def settle(job: Job, result, report: RunReport, sink, progress: Progress) -> None:
    """Step 7, write one paper's result (or its failure)."""
    if isinstance(result, str):
        fail(job.index, result, report, sink, progress)
        return
    try:
        with progress.paused():
            sink.put(job.index, result)
    except OSError as e:  # disk full, permission denied: this paper's summary is lost, say so
        fail(job.index, f"cannot write its summary: {e.strerror or e}", report, sink, progress)
        return
    report.outcomes[job.index].status = "done"
    progress.done(job.source.name, result)


def fail(index: int, reason: str, report: RunReport, sink, progress: Progress) -> None:
    outcome = report.outcomes[index]
    outcome.status, outcome.reason = "failed", reason
    sink.put(index, None)
    progress.failed(outcome.name, reason)


def _failure_reason(e: BaseException) -> str:
    """One line in words: our own errors say it themselves; anything else (OSError, a crash) is
    described (`errors.describe`), never by its class name."""
    text = " ".join(str(e).split()) if isinstance(e, ArxsumError) else describe(e)
    return text[:300] or "an unexpected error with no message"


def _reason(e: BaseException) -> str:
    """The exception's message on one line, at most 300 characters; its description if it has none."""
    return " ".join(str(e).split())[:300] or describe(e)


# -- the model side --------------------------------------------------------------------------

class Engine:
    """The summarizer, loaded on first need, with the batch size and the OOM back-off."""

    def __init__(self, cfg: RunConfig, load: Callable[[], object], progress: Progress) -> None:
        self.cfg, self._load, self.progress = cfg, load, progress
        self._summarizer = None
        self.batch_size = cfg.batch_size or 1
        self.max_input_tokens: int | None = None
        self.loaded_at: float | None = None  # perf_counter when the model was ready
        self.wait_s = 0.0  # time since then spent waiting for extraction

    def load(self):
        return self.summarizer

    @contextmanager
    def waiting(self):
        """Around a wait for extraction: counted as the model's idle time once it is loaded."""
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.loaded_at is not None:
                self.wait_s += time.perf_counter() - max(started, self.loaded_at)

    def loaded_s(self) -> float | None:
        return None if self.loaded_at is None else time.perf_counter() - self.loaded_at

    @property
    def summarizer(self):
        if self._summarizer is None:
            from arxsum.summarizer import check_summary_length, input_token_limit

            self._summarizer = self._load()
            self._note_without_kernels(self._summarizer)
            self.max_input_tokens = input_token_limit(self.cfg.max_input_tokens, self._summarizer.max_positions)
            check_summary_length(self.cfg.options, self._summarizer.decoder_positions)
            if self.cfg.batch_size is None:
                self.batch_size = default_batch_size(self._summarizer, self.max_input_tokens, self.cfg.options)
            self.loaded_at = time.perf_counter()
        return self._summarizer

    def count_tokens(self, text: str) -> int:
        return self.summarizer.count_tokens(text)

    def _note_without_kernels(self, summarizer) -> None:
        """On the CPU without the decoding kernels a summary takes about twice as long: say why."""
        model = getattr(summarizer, "model", None)
        if str(getattr(summarizer, "device", "")) != "cpu" or getattr(model, "kernels", True) is not None:
            return
        from arxsum import cpukernels

        reason = cpukernels.unavailable_reason()
        if reason and "ARXSUM_CPU_KERNELS" not in reason:
            self.progress.note(f"decoding without the CPU kernels ({reason}): about 2x slower")

    def summarize_all(self, windows: Iterable[list[Job]]) -> Iterator[tuple[Job, Result | str]]:
        """Step 5-6: results for the jobs of each window as they are done. Batches of one go one by
        one, in input order; larger ones (sorted longest first within a window) are continuously
        batched where the summarizer can (`summarize_stream`): the next papers take the rows of
        finished ones, across windows too, so the batch stays full until the inputs run out."""
        windows = iter(windows)
        for window in windows:
            if self.refills():
                yield from self._stream(window, windows)
                return
            for batch in make_batches(window, self.batch_size):
                yield from self.summarize(batch)

    def refills(self) -> bool:
        """Whether batches are continuously batched (more than one paper a batch, and a summarizer
        that can); asked once the model is loaded."""
        return (self.batch_size > 1 and self.cfg.refill and self._summarizer is not None
                and hasattr(self._summarizer, "summarize_stream"))

    def _stream(self, first: list[Job], windows: Iterator[list[Job]]) -> Iterator[tuple[Job, Result | str]]:
        """Continuous batching over `first` and every later window. On CUDA out-of-memory the batch
        size is halved and the papers in flight start again; a paper that breaks a batch is found by
        running that batch's papers alone (as _generate does), and the stream goes on."""
        queue = deque(sorted(first, key=lambda j: -j.tokens))

        def jobs() -> Iterator[Job]:
            while True:
                if not queue:
                    nxt = next(windows, None)
                    if nxt is None:
                        return
                    queue.extend(sorted(nxt, key=lambda j: -j.tokens))
                    continue
                yield queue.popleft()

        while True:
            taken: list[Job] = []  # in the order the stream took them: its indices
            finished: set[int] = set()

            def texts(taken=taken) -> Iterator[str]:
                for job in jobs():
                    taken.append(job)
                    yield job.text

            stream = self.summarizer.summarize_stream(texts(), self.cfg.options, self.max_input_tokens, self.batch_size,
                                                      **self._live_line(f"{self.batch_size} papers", "encoding"))
            last = time.perf_counter()
            try:
                for i, summary in stream:
                    now = time.perf_counter()
                    finished.add(i)
                    yield taken[i], self._result(taken[i], summary, now - last)
                    last = now
                return
            except Exception as e:
                in_flight = [job for i, job in enumerate(taken) if i not in finished]
                if is_cuda_oom(e):
                    release_cuda_cache()
                    self.progress.note(f"CUDA out of memory with a batch of {self.batch_size}; "
                                       f"retrying with {max(1, self.batch_size // 2)}")
                    self.batch_size = max(1, self.batch_size // 2)
                    queue.extendleft(reversed(in_flight))  # they start again, first
                elif stops_the_run(e):
                    raise
                else:
                    for job in in_flight:  # alone, as _generate finds the paper at fault
                        yield from self.summarize([job])
                if self.batch_size == 1:  # after the back-off: one by one from here on
                    for job in jobs():
                        yield from self.summarize([job])
                    return

    def _live_line(self, what: str, doing: str, takes_on_step: bool = True) -> dict:
        """The live line says what the model does; returns the on_step argument that times its
        decoding steps there, where the summarizer takes one."""
        if not getattr(self.progress, "live", False):  # a Ray actor's notes have no live line
            return {}
        self.progress.phase(f"{what}: {doing}")
        return {"on_step": StepTimer(self.progress, what, self.cfg.options.max_length)} if takes_on_step else {}

    def summarize(self, batch: list[Job]) -> Iterator[tuple[Job, Result | str]]:
        """Step 6: Results (or failure reasons) for one batch, halving it on CUDA out-of-memory."""
        started = time.perf_counter()
        outputs = self._generate(batch)
        share = (time.perf_counter() - started) / max(1, len(batch))
        for job, out in zip(batch, outputs, strict=True):
            yield job, out if isinstance(out, str) else self._result(job, out, share)

    def _generate(self, batch: list[Job]) -> list:
        """Summaries (or reasons) for `batch`, in its order, never more than `self.batch_size` at once."""
        if len(batch) > self.batch_size:  # the size shrank after an OOM: split what was grouped before
            out: list = []
            while len(out) < len(batch):
                out += self._generate(batch[len(out):len(out) + self.batch_size])
            return out
        texts = [job.text for job in batch]
        tokens = sum(min(job.tokens, self.max_input_tokens or job.tokens) for job in batch)
        what = batch[0].source.name if len(batch) == 1 else f"{len(batch)} papers"
        extra = self._live_line(what, f"encoding {tokens:,} tokens", _takes_on_step(self.summarizer))
        try:
            return self.summarizer.summarize_batch(texts, self.cfg.options, self.max_input_tokens, **extra)
        except Exception as e:
            if is_cuda_oom(e):
                release_cuda_cache()
                if len(batch) == 1:
                    return ["CUDA out of memory even alone (try --max-input-tokens or --dtype float16)"]
                self.batch_size = max(1, len(batch) // 2)
                self.progress.note(f"CUDA out of memory with a batch of {len(batch)}; "
                                   f"retrying with {self.batch_size}")
                return self._generate(batch)
            if stops_the_run(e):
                raise
            if len(batch) > 1:  # find the paper at fault: the others still get their summaries
                return [out for job in batch for out in self._generate([job])]
            return [_failure_reason(e)]

    def _result(self, job: Job, summary, share: float) -> Result:
        text = summary.text if job.model_text is None else readable_summary(summary.text, job.model_text)
        if summary.truncated:
            self.progress.note(f"{job.source.name}: input truncated from {summary.original_tokens} "
                               f"to {summary.input_tokens} tokens")
        return Result(source=job.source.name, title=job.doc.title, summary=text, abstract=job.doc.abstract,
                      input_tokens=summary.input_tokens, original_tokens=summary.original_tokens,
                      truncated=summary.truncated, model=str(getattr(self.summarizer, "name", "")),
                      seconds=job.seconds + share, kind=job.doc.kind)


def stops_the_run(e: BaseException) -> bool:
    """An error of the model side that is no paper's fault (the model, the options), or any unknown
    one under ARXSUM_DEBUG: raised, not recorded as a paper's failure."""
    if isinstance(e, ArxsumError):
        return not isinstance(e, InputError)
    return debug()


def _takes_on_step(summarizer) -> bool:
    import inspect

    try:
        return "on_step" in inspect.signature(summarizer.summarize_batch).parameters
    except (TypeError, ValueError):
        return False


class StepTimer:
    """on_step for the live line: decoding step k of at most max, and the time left at the measured
    step time (an upper bound: a summary may end sooner)."""

    def __init__(self, progress: Progress, what: str, max_length: int) -> None:
        self.progress, self.what, self.max_length = progress, what, max_length
        self.first: float | None = None
        self.last_shown = 0.0

    def __call__(self, length: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_length = now, length
        if now - self.last_shown < 0.1 and length < self.max_length:
            return
        self.last_shown = now
        steps = length - self.first_length
        left = ""
        if steps > 0:
            per_step = (now - self.first) / steps
            left = f", {(self.max_length - length) * per_step:.0f} s left at most"
        self.progress.phase(f"{self.what}: decoding {length - 1}/{self.max_length - 1}{left}")


def readable_summary(text: str, model_text: ModelText) -> str:
    """The dataset-style summary as prose: formulas put back, the paper's casing restored."""
    from arxsum.normalize import readable

    return readable(text, list(model_text.math), model_text.cased)


def is_cuda_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(e, oom_type):
        return True
    return isinstance(e, RuntimeError) and "CUDA out of memory" in str(e)


def release_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_batch_size(summarizer, max_input_tokens: int, options: GenerationOptions) -> int:
    """1 on CPU; on CUDA as many worst-case (max_input_tokens) papers as fit in 70% of free memory.

    The estimate is rough on purpose; a wrong guess costs one CUDA out-of-memory and a halving.
    """
    device = str(getattr(summarizer, "device", "cpu"))
    if not device.startswith("cuda"):
        return 1
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    config = getattr(getattr(summarizer, "model", None), "config", None)
    dtype = getattr(summarizer, "dtype", torch.float32)
    per_paper = estimate_paper_bytes(
        max_input_tokens, num_beams=options.num_beams, max_length=options.max_length,
        d_model=getattr(config, "d_model", 768), layers=getattr(config, "decoder_layers", 6),
        bytes_per_value=torch.tensor([], dtype=dtype).element_size())
    return max(1, min(64, int(0.7 * free // per_paper)))


def estimate_paper_bytes(tokens: int, *, num_beams: int, max_length: int = 320, d_model: int = 768,
                         layers: int = 6, bytes_per_value: int = 4) -> int:
    """GPU memory one paper needs at its peak, roughly (T tokens, D = d_model, L decoder layers): the
    larger of the two phases.

    - encoding: transient activations, ~16 x T x D (hidden states, q/k/v, LSG's key and value windows
      of globals + 3 blocks per block, the 4D feed-forward);
    - decoding: the cross-attention keys and values, L x 2 x T x D, shared by the beams, and the
      self-attention caches, two buffers (the reorder writes one from the other) of
      L x 2 x beams x max_length x D.

    Measured on an H200 in bfloat16 at 16384 tokens, 5 beams, 320 steps: 365 MB a paper at batches of
    64 and 128; this gives 403 MB.
    """
    encoding = 16 * tokens * d_model
    decoding = layers * 2 * tokens * d_model + 2 * layers * 2 * num_beams * max_length * d_model
    return max(encoding, decoding) * bytes_per_value


# -- progress and the final report -----------------------------------------------------------

class Progress:
    """Plain lines on stderr (not a terminal); `RichProgress` draws a bar instead; quiet prints only failures."""

    def __init__(self, console: Console, *, quiet: bool, total: int) -> None:
        self.console, self.quiet, self.total = console, quiet, total
        self.finished = 0
        self.tokens = 0
        self.started = time.perf_counter()

    @staticmethod
    def create(console: Console, *, quiet: bool, total: int) -> Progress:
        if not quiet and console.is_terminal and total >= 1:
            return RichProgress(console, quiet=quiet, total=total)
        return Progress(console, quiet=quiet, total=total)

    live = False  # a live line on a terminal (RichProgress)

    def phase(self, text: str) -> None:
        """What is happening now (reading, encoding, decoding step k): shown on the live line only."""

    def paused(self):
        from contextlib import nullcontext

        return nullcontext()

    def say(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.say(f"arxsum: {message}")

    def skipped(self, n: int) -> None:
        if n:
            self.note(f"skipping {n} input{'s' if n > 1 else ''} already summarized (--overwrite redoes them)")

    def failed(self, name: str, reason: str, *, counted: bool = True) -> None:
        self.say(f"arxsum: {name}: {reason}")
        if counted:
            self._advance(0)

    def done(self, name: str, result: Result) -> None:
        self._advance(result.input_tokens)
        if not self.quiet and self.total > 1:
            self.say(f"arxsum: [{self.finished}/{self.total}] {name}: done "
                     f"({result.input_tokens} tokens, {result.seconds:.1f}s)")

    def elsewhere(self, name: str, who: str) -> None:
        """Another run wrote this input's output."""
        self._advance(0)
        if not self.quiet and self.total > 1:
            by = "another run" if who == "another run" else f"another run ({who})"
            self.say(f"arxsum: [{self.finished}/{self.total}] {name}: done by {by}")

    def waiting(self, owners: list[str], n: int) -> None:
        """This run's own work is done; `n` inputs are held by other live runs (said once)."""
        if not getattr(self, "_said_waiting", False):
            self._said_waiting = True
            self.note(f"waiting for {n} input{'s' if n > 1 else ''} that other runs hold "
                      f"({', '.join(owners[:3])}{', ...' if len(owners) > 3 else ''})")

    def _advance(self, tokens: int) -> None:
        self.finished += 1
        self.tokens += tokens

    def tokens_per_second(self) -> float:
        return self.tokens / max(1e-9, time.perf_counter() - self.started)

    def close(self) -> None:
        pass


class RichProgress(Progress):
    """On a terminal: a live line on stderr saying what is happening (reading, encoding N tokens,
    decoding step k of at most max, time left), and with several papers a bar under it: papers
    done, input tokens per second, ETA. Transient: gone when the run ends."""

    live = True

    def __init__(self, console: Console, *, quiet: bool, total: int) -> None:
        super().__init__(console, quiet=quiet, total=total)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self.line = Bar(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True)
        self.status = self.line.add_task("starting", total=None)
        self.bar = None  # one paper: the line alone
        if total > 1:
            self.bar = Bar(TextColumn("summarizing"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[tps]} tok/s"), TimeRemainingColumn(),
                           console=console, transient=True)
            self.task = self.bar.add_task("papers", total=total, tps="-")
        from rich.console import Group
        from rich.live import Live

        self.display = Live(Group(self.line, self.bar) if self.bar is not None else self.line,
                            console=console, transient=True, refresh_per_second=8, redirect_stdout=False,
                            redirect_stderr=False)
        self.display.start()

    def phase(self, text: str) -> None:
        width = max(20, self.console.width - 4)
        name, sep, rest = text.partition(": ")
        if len(text) > width and sep:  # the paper's name gives way first, from its left
            keep = max(8, width - len(rest) - len(sep) - 1)
            text = ("…" + name[-keep:] if len(name) > keep else name) + sep + rest
        self.line.update(self.status, description=text if len(text) <= width else text[:width - 1] + "…")

    def paused(self):
        """Stdout on the same terminal: the live line steps aside while a summary is written."""
        from contextlib import contextmanager

        @contextmanager
        def aside():
            self.display.stop()
            try:
                yield
            finally:
                self.display.start()

        return aside()

    def done(self, name: str, result: Result) -> None:
        self._advance(result.input_tokens)

    def _advance(self, tokens: int) -> None:
        super()._advance(tokens)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, tps=f"{self.tokens_per_second():,.0f}")

    def close(self) -> None:
        self.display.stop()


def write_report(console: Console, report: RunReport, *, quiet: bool) -> None:
    """The closing table on stderr: done, skipped, failed, and the reason for each failure."""
    if report.interrupted:
        done = report.count("done")
        console.print(f"arxsum: interrupted; {done} summar{'y' if done == 1 else 'ies'} written so far are kept",
                      markup=False, highlight=False, soft_wrap=True)
    if quiet or len(report.outcomes) < 2:
        return
    from rich.table import Table
    from rich.text import Text

    counts = f"{report.count('done')} done, {report.count('skipped')} skipped, {len(report.failures)} failed"
    if report.count("elsewhere"):
        counts += f", {report.count('elsewhere')} done by other runs"
    if report.count("pending"):
        counts += f", {report.count('pending')} not reached"
    table = Table(show_edge=True)
    table.add_column("status")
    table.add_column("input", overflow="fold")
    table.add_column("reason", overflow="fold")
    for status in ("done", "skipped", "pending"):
        n = report.count(status)
        if n:
            label = "not reached" if status == "pending" else status
            table.add_row(label, f"{n} input{'s' if n > 1 else ''}", "")
    by_others = Counter(o.reason for o in report.outcomes if o.status == "elsewhere")
    if by_others:
        n = sum(by_others.values())
        table.add_row("by other runs", f"{n} input{'s' if n > 1 else ''}",
                      ", ".join(f"{who}: {k}" for who, k in by_others.most_common()))
    for o in report.failures:
        table.add_row("failed", Text(o.name), Text(o.reason))
    if not console.is_terminal:  # a pipe or a log file gets each reason whole, on one row
        console = Console(file=console.file, width=240, color_system=None)
    console.print(f"arxsum: {counts}", markup=False, highlight=False, soft_wrap=True)
    console.print(table, markup=False, highlight=False)


__all__ = ["DEFAULT_MAX_PAGES", "DEFAULT_TIMEOUT_S", "RunConfig", "RunReport", "default_batch_size",
           "estimate_paper_bytes", "run"]
