"""`arxsum --ray`: the runner's pipeline on a Ray cluster, with Ray Data moving the papers (issue 8).

    driver:  discover -> skip finished -> Ray Data items (one row per paper to do)
    CPU actors (ExtractStage):      read + extract (per-file timeout) -> model text
    model actors (SummarizeStage):  model loaded once per actor -> sort by length -> batch -> summarize
    driver:  write each result as it arrives (the runner's sinks) -> report

Discovery, resume and writing stay on the driver and are the runner's own functions, so output
names, file contents (atomic writes) and the skip/overwrite rules are those of `arxsum.runner.run`;
inside the model actors the runner's `Engine` (batch size, OOM back-off, Result fields) and
`make_batches` (length-aware batching) do the work. Only the text of the summaries travels back:
the output folder need not be shared by the cluster's nodes, but the input files must be readable
from every node (a shared file system), and arxsum must be installed on every node.

No engine of our own: scheduling, actor restarts and data movement are Ray's. A failing paper
becomes a failed row (its reason is the one the single-machine run gives), never a failed job; only
errors that concern every paper (a model that does not load, a bad option) stop the run, as there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from rich.console import Console

from arxsum.arxiv import ArxivClient
from arxsum.document import Document, ModelText
from arxsum.errors import ArxsumError, InputError, ModelLoadError, OptionsError
from arxsum.runner import (
    SORT_WINDOW,
    Engine,
    Job,
    Progress,
    RunConfig,
    RunReport,
    _failure_reason,
    _reason,
    debug,
    extract_options,
    fail,
    finish_run,
    make_batches,
    start_run,
)
from arxsum.sources import ExtractOptions, Extractor, Source
from arxsum.writers import Result

GPU_WINDOW = SORT_WINDOW * 16  # papers per model-actor call on GPUs when --batch-size is not given
# A Ray Data task works through its whole input (a block, or blocks bundled up to the batch size)
# before its output moves on, so small blocks keep results, and so resume points, flowing: one
# paper a block when a model actor takes one paper at a time (CPUs), else 8 (100,000 papers make
# 12,500 blocks), and a model actor's output comes a window at a time
PAPERS_PER_BLOCK = 8


# -- how the cluster is used -------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """How many actors of each stage, and what each one asks Ray for."""

    summarizers: int  # model actors: one model each
    summarizer_cpus: float
    summarizer_gpus: int  # 1 on GPU clusters, else 0
    extractors: int  # the most extraction actors (the pool grows from 1 as Ray sees fit)
    window: int  # papers handed to a model actor at once: they are sorted by length inside it

    @property
    def device(self) -> str:
        return "cuda:0" if self.summarizer_gpus else "cpu"  # a GPU actor sees its one GPU as cuda:0


def plan_resources(cpus: float, gpus: float, *, workers: int | None, device: str,
                   batch_size: int | None) -> Plan:
    """Actors for a cluster of `cpus` CPUs and `gpus` GPUs.

    GPUs (unless --device cpu): one model actor per GPU (or --workers), each with 1 GPU and 1 CPU.
    CPUs only: --workers model actors, by default half the CPUs; they share what one extraction
    actor leaves, so both stages can always start (a pool that cannot start would wait forever).
    Extraction actors take the remaining CPUs, at least one.
    """
    if workers is not None and workers < 1:
        raise OptionsError(f"--workers must be at least 1, got {workers}")
    cpus = max(1.0, float(cpus))
    use_gpus = device != "cpu" and gpus >= 1
    if device.startswith("cuda") and not use_gpus:
        raise OptionsError(f"--device {device} asked for, but the Ray cluster has no GPUs")
    if use_gpus:
        n = workers or int(gpus)
        extractors = max(1, int(cpus) - n)
        window = SORT_WINDOW * batch_size if batch_size else GPU_WINDOW
        return Plan(n, min(1.0, cpus / (n + 1)), 1, extractors, window)
    n = workers or max(1, int(cpus) // 2)
    per_actor = min(1.0, max(cpus - 1, 0.5) / n)
    extractors = max(1, int(cpus - n * per_actor))
    window = SORT_WINDOW * batch_size if batch_size and batch_size > 1 else 1
    return Plan(n, per_actor, 0, extractors, window)


# -- the run ------------------------------------------------------------------------------------

def run_ray(cfg: RunConfig, *, address: str | None, workers: int | None, model: str,
            device: str = "auto", dtype: str = "auto", stdin: BinaryIO | None = None,
            stdout: TextIO | None = None, console: Console | None = None,
            arxiv: ArxivClient | None = None) -> RunReport:
    """`arxsum.runner.run` on Ray: same inputs, same output files, same report and exit code.

    `address`: a Ray cluster (`auto`, `HOST:PORT`, `ray://...`); None starts a local instance for
    this run (or uses the one this process already started with `ray.init`). `workers`: model
    actors (default: one per GPU, else half the CPUs). `model`, `device`, `dtype` are what each
    actor gives `Summarizer.from_pretrained`.
    """
    console = console or Console(stderr=True)
    items, report, todo, progress, sink, stdin_bytes = start_run(cfg, stdin, stdout, console)
    try:
        if todo:  # everything skipped or bad: no cluster is needed, as no model is loaded
            with _ray_session(address, verbose=cfg.verbose) as ray:
                plan = plan_resources(*_cluster_size(ray), workers=workers, device=device,
                                      batch_size=cfg.batch_size)
                if not plan.summarizer_gpus and device == "auto":
                    progress.note(f"note: the Ray cluster has no GPUs; summarizing on {plan.summarizers} "
                                  f"CPU actor{'s' if plan.summarizers > 1 else ''} (slow: ~25 s or more a paper)")
                rows = [{"index": i, "payload": _dump(_source_row(items[i]))} for i in todo]
                dataset = build_pipeline(ray, rows, cfg, plan, model=model, dtype=dtype,
                                         stdin=stdin_bytes, arxiv=arxiv)
                for row in dataset.iter_rows():
                    settle_row(row, items, report, sink, progress)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        finish_run(cfg, report, sink, progress, console)
    return report


def build_pipeline(ray, rows: list[dict], cfg: RunConfig, plan: Plan, *, model: str, dtype: str,
                   stdin: bytes | None, arxiv: ArxivClient | None):
    """The Ray Data dataset: items -> ExtractStage (CPU actors) -> SummarizeStage (model actors).

    Rows are `{"index": int, "payload": str}`, the payload a JSON object: Arrow needs one schema
    that every block agrees on, and a block where every paper failed would otherwise hold columns
    of nulls only.
    """
    per_block = min(PAPERS_PER_BLOCK, plan.window)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // per_block)))
    dataset = dataset.map_batches(
        ExtractStage, batch_size=1, num_cpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.extractors),
        fn_constructor_kwargs={"options": extract_options(cfg), "timeout": cfg.timeout, "raw": cfg.raw,
                               "stdin": stdin, "arxiv": _arxiv_settings(arxiv)})
    return dataset.map_batches(
        SummarizeStage, batch_size=plan.window, num_cpus=plan.summarizer_cpus,
        num_gpus=plan.summarizer_gpus, compute=ray.data.ActorPoolStrategy(size=plan.summarizers),
        fn_constructor_kwargs={"cfg": cfg, "model": model, "device": plan.device, "dtype": dtype})


def settle_row(row: dict, items: list, report: RunReport, sink, progress: Progress) -> None:
    """One paper back from the cluster: its notes on stderr, then its file (or its failure)."""
    index = int(row["index"])
    payload = json.loads(row["payload"])
    if "fatal" in payload:
        raise FATAL.get(payload["fatal"], ArxsumError)(payload["message"])
    for note in payload.get("notes", []):
        progress.note(note)
    if "result" not in payload:
        fail(index, payload["reason"], report, sink, progress)
        return
    result = Result(**payload["result"])
    sink.put(index, result)
    report.outcomes[index].status = "done"
    progress.done(items[index].name, result)


class _ray_session:
    """ray.init for this run (a local instance when `address` is None) and its shutdown.

    A session this process already opened (tests, notebooks) is used as it is and left open.
    """

    def __init__(self, address: str | None, *, verbose: bool) -> None:
        self.address, self.verbose = address, verbose
        self.started = False

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise OptionsError("--ray needs Ray: pip install 'arxsum[ray]'") from None
        if not ray.is_initialized():
            try:
                ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=self.verbose,
                         logging_level=logging.WARNING if self.verbose else logging.ERROR)
            except ConnectionError as e:
                raise OptionsError(f"cannot reach the Ray cluster at {self.address}: {_reason(e)}") from None
            self.started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours is on stderr already
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # not its INFO lines on every run
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        return ray

    def __exit__(self, *exc) -> bool:
        if self.started:
            import ray

            ray.shutdown()
        return False


def _cluster_size(ray) -> tuple[float, float]:
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 1)), float(resources.get("GPU", 0))


# -- the stages (each runs in a Ray actor) ------------------------------------------------------

def _source_row(source: Source) -> dict:
    return {"name": source.name, "kind": source.kind, "arxiv_id": source.arxiv_id,
            "path": str(source.path) if source.path is not None else None}


def _dump(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _arxiv_settings(client: ArxivClient | None) -> dict | None:
    """An ArxivClient holds a lock, so each actor builds its own from these (and caches on its node)."""
    if client is None:
        return None
    return {"base": client.base, "cache_dir": str(client.cache_dir), "delay": client.delay,
            "timeout": client.timeout, "source": client.source}


def _batch(indices: list[int], payloads: list[dict]) -> dict:
    import numpy as np

    return {"index": np.asarray(indices, dtype=np.int64),
            "payload": np.asarray([_dump(p) for p in payloads], dtype=object)}


def _unbatch(batch: dict) -> Iterator[tuple[int, dict]]:
    for index, payload in zip(batch["index"], batch["payload"], strict=True):
        yield int(index), json.loads(str(payload))


FATAL = {cls.__name__: cls for cls in (ArxsumError, ModelLoadError, OptionsError)}


def stops_the_run(e: BaseException) -> bool:
    """A model or option problem concerns every input: the runner stops with its message."""
    return isinstance(e, ArxsumError) and not isinstance(e, InputError)


def fatal_payload(e: BaseException) -> dict:
    """An error that stops the run, as a row: the driver raises it again as our own exception, so
    the CLI prints its one line (an exception escaping an actor would come back as Ray's, with
    Ray's tracebacks on stderr and an actor restart first)."""
    return {"fatal": type(e).__name__ if type(e).__name__ in FATAL else "ArxsumError", "message": str(e)}


class ExtractStage:
    """CPU actor: a row naming one paper -> its model text (or the reason it has none).

    Extraction and normalisation go through the runner's `Extractor`, so the per-file time limit (a
    worker process killed when it overruns) and the failure reasons are the single-machine run's;
    what is kept of the result is what `runner.prepare` keeps.
    """

    def __init__(self, *, options: ExtractOptions, timeout: float, raw: bool, stdin: bytes | None,
                 arxiv: dict | None) -> None:
        client = ArxivClient(**{**arxiv, "cache_dir": Path(arxiv["cache_dir"])}) if arxiv else None
        self.extractor = Extractor(options, timeout=timeout, workers=1, stdin=stdin, arxiv=client)
        self.raw = raw

    def __call__(self, batch: dict) -> dict:
        indices, payloads = [], []
        for index, row in _unbatch(batch):
            indices.append(index)
            payloads.append(self.extract(row))
        return _batch(indices, payloads)

    def extract(self, row: dict) -> dict:
        source = Source(name=row["name"], kind=row["kind"], arxiv_id=row["arxiv_id"],
                        path=Path(row["path"]) if row["path"] is not None else None)
        notes: list[str] = []
        try:
            paper = self.extractor.submit(source).result()
            notes = [f"{source.name}: {warning}" for warning in paper.doc.warnings]
            text = paper.doc.body if self.raw else paper.model_text.text
            if not text.strip():
                raise InputError("no text left after extraction")
        except Exception as e:
            if debug() and not isinstance(e, InputError):
                raise
            return {"name": source.name, "reason": _failure_reason(e), "notes": notes}
        # the model text's other fields (formulas, casing) turn the summary back into prose
        model_text = None if self.raw else {k: v for k, v in asdict(paper.model_text).items() if k != "text"}
        return {"name": source.name, "title": paper.doc.title, "abstract": paper.doc.abstract, "text": text,
                "model_text": model_text, "seconds": paper.seconds, "notes": notes, "doc_kind": paper.doc.kind}

    def __del__(self) -> None:
        extractor = getattr(self, "extractor", None)
        if extractor is not None:
            extractor.close()


class _Notes:
    """The part of `Progress` the Engine talks to in an actor: its notes travel back with the rows."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(message)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class SummarizeStage:
    """Model actor: the summarizer is loaded once, when the actor starts; each call gets a window
    of papers, sorts them by length into batches (the runner's `make_batches`) and yields one
    output batch per model batch, after one for the papers that failed extraction.

    A model that does not load stops the run only when a paper needs it, as in the runner: papers
    that failed extraction are still settled (a rerun of only-bad files succeeds without a model).
    """

    def __init__(self, *, cfg: RunConfig, model: str, device: str, dtype: str) -> None:
        from arxsum.summarizer import Summarizer

        self.notes = _Notes()
        self.engine = Engine(cfg, lambda: Summarizer.from_pretrained(model, device=device, dtype=dtype),
                             self.notes)
        self.fatal: dict | None = None
        try:
            self.engine.summarizer  # noqa: B018 - load now, once per actor
        except ArxsumError as e:
            if debug():
                raise
            self.fatal = fatal_payload(e)

    def __call__(self, batch: dict) -> Iterator[dict]:
        rows = list(_unbatch(batch))
        failed = [(index, {"reason": row["reason"], "notes": row["notes"]}) for index, row in rows if "reason" in row]
        if failed:  # papers that failed extraction: settled at once, with or without a model
            yield _batch([i for i, _ in failed], [p for _, p in failed])
        todo = [(index, row) for index, row in rows if "reason" not in row]
        if todo and self.fatal is not None:
            yield _batch([todo[0][0]], [self.fatal])
            return
        try:
            yield from self.summarize(todo)
        except ArxsumError as e:
            if debug() or not stops_the_run(e):
                raise
            yield _batch([todo[0][0]], [fatal_payload(e)])

    def summarize(self, rows: list[tuple[int, dict]]) -> Iterator[dict]:
        """Rows with model text -> token counts -> batches sorted by length -> one output batch each."""
        failed: list[tuple[int, dict]] = []
        jobs: list[Job] = []
        notes: dict[int, list[str]] = {}
        for index, row in rows:
            notes[index] = row["notes"]
            try:
                tokens = self.engine.count_tokens(row["text"])
            except Exception as e:
                if debug():
                    raise
                failed.append((index, {"reason": _failure_reason(e), "notes": row["notes"]}))
                continue
            doc = Document(source=row["name"], kind=row["doc_kind"], body="", title=row["title"],
                           abstract=row["abstract"])
            model_text = None if row["model_text"] is None else ModelText(text=row["text"], **row["model_text"])
            jobs.append(Job(index, Source(name=row["name"], kind="file"), doc, row["text"], model_text,
                            tokens, row["seconds"]))
        if failed:
            yield _batch([i for i, _ in failed], [p for _, p in failed])
        for group in make_batches(jobs, self.engine.batch_size):
            indices, payloads = [], []
            for job, result in self.engine.summarize(group):
                payload: dict = {"notes": notes[job.index]}
                if isinstance(result, str):
                    payload["reason"] = result
                else:
                    payload["result"] = asdict(result)
                indices.append(job.index)
                payloads.append(payload)
            payloads[0]["notes"] = payloads[0]["notes"] + self.notes.take()
            yield _batch(indices, payloads)


__all__ = ["Plan", "plan_resources", "run_ray"]
