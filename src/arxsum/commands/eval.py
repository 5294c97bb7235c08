"""`arxsum eval`: ROUGE-1/2/L/Lsum on a JSONL dataset, the way the model card measured it.

Thin: parse options, call `arxsum.evaluate`, print. The main CLI calls `register(app)`.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from arxsum.commands.edge import PanelCommand, errors_to_exit_codes
from arxsum.errors import InputError
from arxsum.options import DEFAULT_MODEL, GenerationOptions

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from arxsum import evaluate

_GEN = GenerationOptions()  # the defaults' one source of truth
_DATA, _MODEL, _DECODING = "Data", "Model", "Decoding (the model card's settings by default)"
_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}

HELP = """Score summaries of DATA against its abstracts with ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum.

DATA is JSONL in the scientific_papers style: one object a line with "article" and "abstract"
(strings, or lists of sentences, which are joined one a line). Each article is summarized with
the decoding options below; with --predictions PRED.jsonl, PRED's "prediction" of each line is
scored instead (in DATA's order) and no model is loaded.

Scores are rouge-score's F-measures (Porter stemming on) in percent: the plain mean over the
examples and a 95% bootstrap interval (1000 resamples, fixed seed). ROUGE-Lsum treats each line
as a sentence. Model summaries are written one sentence per line with a regex splitter (nltk's
punkt, which Hugging Face's example uses, needs a download); given predictions and the abstracts
are scored exactly as written, unless --split-sentences.

DATA is taken to be already normalised (scientific_papers is the model's training text), so
--raw is the default here, unlike for `arxsum PAPER`."""


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def eval_command(
    data: Annotated[Path, typer.Argument(
        help="JSONL dataset: an article and its reference abstract on each line.", metavar="DATA",
        show_default=False)],
    predictions: Annotated[Path | None, typer.Option(
        "--predictions", help="Score this JSONL of predictions (one a line, in DATA's order) "
        "instead of running the model.", rich_help_panel=_DATA, show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Per-example JSONL (prediction, reference, scores). "
        "Default: DATA's name with .predictions.jsonl, beside DATA; with --predictions, none.",
        rich_help_panel=_DATA, show_default=False)] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", help="table: a table on stderr. json: one JSON object on stdout with rouge1, "
        "rouge2, rougeL, rougeLsum (each mean, low, high, in percent) and count.")] = OutputFormat.table,
    article_field: Annotated[str, typer.Option(
        help="DATA's field holding the article.", rich_help_panel=_DATA)] = "article",
    abstract_field: Annotated[str | None, typer.Option(
        help="DATA's field holding the reference abstract. Default: abstract, or reference in a "
        "record without one (as in eval's own per-example files).", rich_help_panel=_DATA,
        show_default=False)] = None,
    prediction_field: Annotated[str, typer.Option(
        help="PRED's field holding the prediction.", rich_help_panel=_DATA)] = "prediction",
    limit: Annotated[int | None, typer.Option(
        min=1, help="Use only the first N records of DATA (and of PRED).", rich_help_panel=_DATA,
        show_default=False)] = None,
    split_sentences: Annotated[bool, typer.Option(
        "--split-sentences", help="Re-split abstracts and given predictions into sentences, one a "
        "line, with the regex splitter before scoring (changes ROUGE-Lsum only).",
        rich_help_panel=_DATA)] = False,
    model: Annotated[str, typer.Option(
        envvar="ARXSUM_MODEL", help="Hub id or local directory of the model.", rich_help_panel=_MODEL)
    ] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(
        envvar="ARXSUM_DEVICE", help="auto, cpu, cuda or cuda:N (auto: cuda:0 when present).",
        rich_help_panel=_MODEL)] = "auto",
    dtype: Annotated[str, typer.Option(
        help="auto, float32, float16 or bfloat16.", rich_help_panel=_MODEL)] = "auto",
    batch_size: Annotated[int, typer.Option(
        min=1, help="Articles summarized together.", rich_help_panel=_MODEL)] = 1,
    raw: Annotated[bool, typer.Option(
        "--raw/--no-raw", help="Feed articles as they are (the default here: DATA is already "
        "normalised). --no-raw normalises each article as `arxsum PAPER` does and makes the "
        "summary readable.", rich_help_panel=_MODEL)] = True,
    max_input_tokens: Annotated[int | None, typer.Option(
        min=1, help="Truncate articles to this many tokens. Default: the model's limit.",
        rich_help_panel=_MODEL, show_default=False)] = None,
    num_beams: Annotated[int, typer.Option(min=1, help="Beams.", rich_help_panel=_DECODING)
                         ] = _GEN.num_beams,
    length_penalty: Annotated[float, typer.Option(
        help="Exponent of the length normalisation in beam ranking.", rich_help_panel=_DECODING)
    ] = _GEN.length_penalty,
    max_length: Annotated[int, typer.Option(
        help="Most summary tokens.", rich_help_panel=_DECODING)] = _GEN.max_length,
    min_length: Annotated[int, typer.Option(
        help="Fewest summary tokens.", rich_help_panel=_DECODING)] = _GEN.min_length,
    no_repeat_ngram_size: Annotated[int, typer.Option(
        help="Block repeated n-grams of this size (0: off).", rich_help_panel=_DECODING)
    ] = _GEN.no_repeat_ngram_size,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")] = False,
) -> None:
    from rich.console import Console

    from arxsum import evaluate  # rouge-score and its kin: imported when a command runs, not for --help

    console = Console(stderr=True)
    with errors_to_exit_codes(console):
        examples = evaluate.load_examples(
            data, article_field=None if predictions else article_field,
            abstract_field=abstract_field, limit=limit)
        output = _output_path(output, data=data, predictions=predictions)
        if predictions is not None:
            given = evaluate.load_predictions(predictions, field=prediction_field,
                                              limit=len(examples) if limit else None)
            evaluate.check_counts(examples, given, data=data, pred=predictions)
            with _progress_and_output(output, len(examples), "scoring", console, quiet) as (stream, advance, _):
                report = evaluate.evaluate_predictions(examples, given, split=split_sentences,
                                                       output=stream, on_progress=advance)
        else:
            options = GenerationOptions(num_beams=num_beams, length_penalty=length_penalty,
                                        max_length=max_length, min_length=min_length,
                                        no_repeat_ngram_size=no_repeat_ngram_size)
            if not quiet:
                console.print(f"loading {model}", highlight=False)
            from arxsum.summarizer import Summarizer  # the model stack, only when a model runs

            summarizer = Summarizer.from_pretrained(model, device=device, dtype=dtype)
            with _progress_and_output(output, len(examples), "summarizing", console, quiet) as (stream, advance, say):
                steps = _StepLine(say, options.max_length)
                say("summarizing: encoding")
                report = evaluate.evaluate_model(summarizer, examples, options, batch_size=batch_size,
                                                 max_input_tokens=max_input_tokens, raw=raw,
                                                 split=split_sentences, output=stream,
                                                 on_progress=steps.advanced(advance), on_step=steps)

    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report.to_json()))
    else:
        console.print(_table(report))
    if output is not None and not quiet:
        console.print(f"per-example scores: {output}", highlight=False)


def _output_path(output: Path | None, *, data: Path, predictions: Path | None) -> Path | None:
    """Where the per-example JSONL goes; never over DATA or PRED."""
    if output is None and predictions is None:
        output = data.with_name(data.name.removesuffix(".jsonl") + ".predictions.jsonl")
    if output is not None:
        for name, path in (("DATA", data), ("--predictions", predictions)):
            if path is not None and output.resolve() == path.resolve():
                raise typer.BadParameter(f"{output} is {name}; choose another path", param_hint="'--output'")
    return output


@contextmanager
def _progress_and_output(output: Path | None, total: int, what: str, console: Console, quiet: bool):
    """(the per-example stream or None, advance(n)): a progress bar on stderr, the file open."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with ExitStack() as stack:
        stream = None
        if output is not None:
            try:
                stream = stack.enter_context(open(output, "w", encoding="utf-8"))
            except OSError as exc:
                raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
        progress = stack.enter_context(Progress(*columns, console=console, disable=quiet, transient=True))
        task = progress.add_task(what, total=total)
        yield stream, lambda n: progress.advance(task, n), lambda text: progress.update(task, description=text)


class _StepLine:
    """The bar's description during a batch: its decoding step of at most max_length, and the time
    left at most at the measured step time (as `arxsum PAPER`'s live line says it)."""

    def __init__(self, say, max_length: int) -> None:
        self.say, self.max_length, self.started = say, max_length, None

    def __call__(self, length: int) -> None:
        now = time.monotonic()
        if self.started is None or length <= 2:
            self.started = (now, length)
        start, first = self.started
        per_step = (now - start) / (length - first) if length > first else None
        left = "" if per_step is None else f", {per_step * (self.max_length - length):.0f} s left at most"
        self.say(f"summarizing: decoding step {length} of at most {self.max_length}{left}")

    def advanced(self, advance):
        def done(n: int) -> None:
            self.started = None
            advance(n)
            self.say("summarizing: encoding")  # the next batch's encoder, until its first step
        return done


def _table(report: evaluate.Report) -> Table:
    from rich.table import Table

    table = Table(title=f"ROUGE F-measure (%), {report.count} examples", title_justify="left")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% interval", justify="right")
    for name, iv in report.scores.items():
        table.add_row(_LABELS[name], f"{iv.mean:.2f}", f"{iv.low:.2f} – {iv.high:.2f}")
    return table


def register(app: typer.Typer) -> None:
    """Add the `eval` subcommand to `app`."""
    app.command("eval", help=HELP, no_args_is_help=True, cls=PanelCommand,
                short_help="ROUGE of summaries against the abstracts.")(eval_command)
