"""The `arxsum` command: parse, build the options, call the runner, map errors to exit codes.

`arxsum paper.pdf` runs the default command, `summarize`; `extract` and `eval` are subcommands
registered by their own modules (`arxsum.commands.*`) when those are installed.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from arxsum import __version__
from arxsum.commands.edge import PanelCommand, errors_to_exit_codes
from arxsum.errors import OptionsError
from arxsum.options import DEFAULT_MAX_PAGES, DEFAULT_MODEL, DEFAULT_TIMEOUT_S

DEFAULT_COMMAND = "summarize"
if TYPE_CHECKING:
    from rich.console import Console

SUBCOMMAND_MODULES = ("extract", "eval", "env")  # arxsum.commands.<name>.register(app), when present


GROUP_OPTIONS = ("--help", "-h", "--version", "--install-completion", "--show-completion")
EXAMPLES = """\b
  arxsum paper.pdf                           summary on stdout
  arxsum 2210.15497 --format json            an arXiv id, as JSON
  arxsum papers/ --output-dir out/           a folder; run again to resume
  find . -name '*.pdf' | arxsum --files-from - -f jsonl > all.jsonl
  arxsum extract paper.pdf                   the text the model reads
  arxsum eval test.jsonl --limit 200         ROUGE against the abstracts
  arxsum env                                 versions and hardware"""


class DefaultCommandGroup(TyperGroup):
    """A group whose first argument falls back to `summarize` when it names no subcommand."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in GROUP_OPTIONS:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: typer.Context, formatter) -> None:
        """The group's help (subcommands), then the default command's options, then examples."""
        super().format_help(ctx, formatter)
        command = self.commands.get(DEFAULT_COMMAND)
        if command is not None:
            formatter.write_paragraph()
            with typer.Context(command, info_name=ctx.info_name, parent=ctx.parent) as sub:
                command.format_help(sub, formatter)
        with formatter.section("Examples"):
            formatter.write_text(EXAMPLES)

    def shell_complete(self, ctx: typer.Context, incomplete: str):
        """At the first word, `arxsum paper.pdf` is a command too: the default command's options
        after a dash, files and folders beside the subcommands otherwise."""
        items = super().shell_complete(ctx, incomplete)
        command = self.commands.get(DEFAULT_COMMAND)
        if command is not None and incomplete.startswith("-"):
            seen = {item.value for item in items}
            items += [item for item in command.shell_complete(ctx, incomplete) if item.value not in seen]
        elif items:  # with no match the shells complete paths themselves
            items += path_completions(incomplete)
        return items


def path_completions(incomplete: str) -> list:
    """Files and folders starting with `incomplete` (folders with a trailing /)."""
    from typer._click.shell_completion import CompletionItem

    folder, _, prefix = incomplete.rpartition("/")
    base = Path(folder or ".") if folder or not incomplete.startswith("/") else Path("/")
    try:
        entries = sorted(p for p in base.iterdir() if p.name.startswith(prefix) and
                         (prefix.startswith(".") or not p.name.startswith(".")))
    except OSError:
        return []
    head = f"{folder}/" if folder or incomplete.startswith("/") else ""
    return [CompletionItem(f"{head}{p.name}{'/' if p.is_dir() else ''}") for p in entries[:200]]


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in ("auto", "cpu", "cuda", "cuda:0", "cuda:1") if d.startswith(incomplete)]


class Format(str, Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    md = "md"


class ArxivSource(str, Enum):
    auto = "auto"
    latex = "latex"
    pdf = "pdf"


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


app = typer.Typer(
    cls=DefaultCommandGroup,
    name="arxsum",
    help="Summarize arXiv papers (PDF, LaTeX, text, arXiv ids) into abstracts with LSG-BART.\n\n"
         "`arxsum paper.pdf` is `arxsum summarize paper.pdf`.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: reads at 80 columns, nothing taken for markup
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"arxsum {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                          callback=_version, is_eager=True)] = False,
) -> None:
    """Summarize arXiv papers into abstracts with LSG-BART."""


def _check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


INPUT = "Input"
MODEL = "Model and decoding (unset: the model card's defaults)"
OUTPUT = "Output"
BATCH = "Batch and bad input"
RAY = "Ray cluster (pip install 'arxsum[ray]')"


@app.command(DEFAULT_COMMAND, cls=PanelCommand, short_help="Summarize papers (the default command).")
def summarize(
    inputs: Annotated[list[str] | None, typer.Argument(
        help="PDF, .txt, .md or .tex files, folders (searched recursively), arXiv ids or URLs; "
             "- reads stdin.", show_default=False, metavar="INPUT")] = None,
    files_from: Annotated[str | None, typer.Option(
        "--files-from", metavar="FILE|-", help="Read more inputs from FILE, one a line (- for stdin).",
        rich_help_panel=INPUT)] = None,
    glob: Annotated[list[str] | None, typer.Option(
        "--glob", help="Which files a folder search picks (repeatable) (default: *.pdf *.txt *.md *.tex).",
        rich_help_panel=INPUT)] = None,
    password: Annotated[str | None, typer.Option(
        help="Password of encrypted PDFs.", envvar="ARXSUM_PDF_PASSWORD", rich_help_panel=INPUT)] = None,
    keep_appendix: Annotated[bool, typer.Option(
        "--keep-appendix", help="Keep appendices in the text the model reads.", rich_help_panel=INPUT)] = False,
    max_pages: Annotated[int, typer.Option(
        help="Read at most this many pages of a PDF.", rich_help_panel=INPUT)] = DEFAULT_MAX_PAGES,
    timeout: Annotated[float, typer.Option(
        help="Seconds one file's extraction may take before it fails (0: no limit, in-process).",
        rich_help_panel=INPUT)] = DEFAULT_TIMEOUT_S,
    model: Annotated[str, typer.Option(
        help="Hub id or local folder of the model.", envvar="ARXSUM_MODEL", rich_help_panel=MODEL)] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(
        help="auto, cpu, cuda or cuda:N (auto: cuda:0 when present).", envvar="ARXSUM_DEVICE",
        callback=_check_device, autocompletion=_complete_device, rich_help_panel=MODEL)] = "auto",
    dtype: Annotated[Dtype, typer.Option(help="Weights' dtype.", rich_help_panel=MODEL)] = Dtype.auto,
    num_beams: Annotated[int | None, typer.Option(help="Beam width.", rich_help_panel=MODEL)] = None,
    length_penalty: Annotated[float | None, typer.Option(
        help="Exponent on length in beam ranking.", rich_help_panel=MODEL)] = None,
    max_length: Annotated[int | None, typer.Option(
        help="Most summary tokens (decoder start included).", rich_help_panel=MODEL)] = None,
    min_length: Annotated[int | None, typer.Option(help="Fewest summary tokens.", rich_help_panel=MODEL)] = None,
    no_repeat_ngram_size: Annotated[int | None, typer.Option(
        help="Block repeated n-grams of this size (0: off).", rich_help_panel=MODEL)] = None,
    early_stopping: Annotated[bool | None, typer.Option(
        "--early-stopping/--no-early-stopping",
        help="Stop a paper's search once it has num-beams finished summaries (the card's setting) "
             "or, with --no-early-stopping, when none can get better (transformers' heuristic).",
        show_default=False, rich_help_panel=MODEL)] = None,
    max_input_tokens: Annotated[int | None, typer.Option(
        help="Truncate inputs to this many tokens (default: the model's limit).", rich_help_panel=MODEL)] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Feed the extracted text to the tokenizer untouched and print the decoded summary "
                      "untouched (what the Hugging Face pipeline does).", rich_help_panel=MODEL)] = False,
    batch_size: Annotated[int | None, typer.Option(
        help="Papers per batch (default: 1 on CPU, from free memory on CUDA).", rich_help_panel=BATCH)] = None,
    format: Annotated[Format, typer.Option(
        "--format", "-f", help="Output format.", rich_help_panel=OUTPUT)] = Format.text,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to FILE instead of stdout.", rich_help_panel=OUTPUT)] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", help="One file per input under DIR, mirroring folders; existing ones are skipped.",
        rich_help_panel=OUTPUT)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Redo inputs whose --output-dir file exists.", rich_help_panel=OUTPUT)] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress or notes on stderr (failures still print).", rich_help_panel=OUTPUT)] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show pypdf's warnings.", rich_help_panel=OUTPUT)] = False,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Where downloaded arXiv PDFs are kept (default: ~/.cache/arxsum).", envvar="ARXSUM_CACHE_DIR",
        rich_help_panel=INPUT)] = None,
    source: Annotated[ArxivSource, typer.Option(
        "--source", help="What to read of an arXiv paper: its LaTeX source or its PDF (auto: the LaTeX "
                         "source when there is one and it has a body, else the PDF).",
        rich_help_panel=INPUT)] = ArxivSource.auto,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run on Ray Data: extraction on CPU actors, the model on one actor per GPU "
                      "(a local Ray instance unless --ray-address).", rich_help_panel=RAY)] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="Address of a running Ray cluster (e.g. auto); implies --ray.", envvar="RAY_ADDRESS",
        rich_help_panel=RAY)] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Model actors on Ray (default: one per GPU, or half the CPUs).", rich_help_panel=RAY)] = None,
) -> None:
    """Summarize papers: one summary per input, on stdout, in -o FILE, or in --output-dir."""
    from rich.console import Console  # rich is imported when a command runs, not for --version

    console = Console(stderr=True)
    generation = {"num_beams": num_beams, "length_penalty": length_penalty, "max_length": max_length,
                  "min_length": min_length, "no_repeat_ngram_size": no_repeat_ngram_size,
                  "early_stopping": early_stopping}
    with errors_to_exit_codes(console), _sigterm_as_interrupt():
        from arxsum.runner import RunConfig  # here, not at the top: `arxsum --help` stays light

        cfg = RunConfig(
            inputs=list(inputs or []), files_from=files_from, globs=glob or None, format=format.value,
            output=output, output_dir=output_dir, overwrite=overwrite, quiet=quiet, raw=raw,
            keep_appendix=keep_appendix, password=password, verbose=verbose, timeout=timeout,
            max_pages=max_pages, batch_size=batch_size, max_input_tokens=max_input_tokens,
            options=generation_options(generation), device=device, model=model)
        from arxsum.arxiv import ArxivClient

        arxiv = ArxivClient(cache_dir=cache_dir, source=source.value)
        if ray or ray_address:
            from arxsum.distributed import run_ray

            report = run_ray(cfg, address=ray_address, workers=workers, model=model, device=device,
                             dtype=dtype.value, console=console, arxiv=arxiv)
        elif workers is not None:
            raise OptionsError("--workers is for --ray runs")
        else:
            report = run(cfg, console=console, arxiv=arxiv,
                         load_summarizer=lambda: load_summarizer(model, device, dtype.value, console, quiet))
        raise typer.Exit(report.exit_code)


def run(cfg, **kwargs):
    """`arxsum.runner.run`, imported when a run starts (the runner brings extraction and writers)."""
    from arxsum.runner import run as run_inputs

    return run_inputs(cfg, **kwargs)


def generation_options(given: dict):
    """GenerationOptions from the flags the user set; the dataclass owns every default."""
    from arxsum.options import GenerationOptions

    return GenerationOptions(**{k: v for k, v in given.items() if v is not None})


def load_summarizer(model: str, device: str, dtype: str, console: Console, quiet: bool):
    """Load the model once, on the device asked for (auto: cuda:0 if present, else CPU with a note)."""
    from arxsum.summarizer import Summarizer

    if device == "auto":
        device = resolve_auto_device(console, quiet, dtype)

    def note(message: str) -> None:  # what loading says (the one-time CPU measurement), as the CLI's notes
        if not quiet:
            console.print(f"arxsum: note: {message}", markup=False, highlight=False, soft_wrap=True)

    return Summarizer.from_pretrained(model, device=device, dtype=dtype, notify=note)


def resolve_auto_device(console: Console, quiet: bool, dtype: str = "auto") -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    if not quiet:
        from arxsum.cpukernels import cpuinfo

        hint = ""
        if dtype != "bfloat16" and "avx512_bf16" in cpuinfo("flags").split():  # measured: 23 s -> 12 s
            hint = "; --dtype bfloat16 about halves that, summaries may differ slightly"
        console.print(f"arxsum: note: no CUDA device found; running on CPU (~25 s or more a paper{hint}; "
                      "a GPU takes ~1 s)", markup=False, highlight=False, soft_wrap=True)
    return "cpu"


class _sigterm_as_interrupt:
    """`kill PID` stops a run like Ctrl-C does: outputs written so far are kept, no temp file is left.

    SIGINT is handled too, even where a non-interactive shell started us with it ignored.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _register_subcommands() -> None:
    """`arxsum extract` and `arxsum eval`, from their own modules, once those exist."""
    for name in SUBCOMMAND_MODULES:
        module_name = f"arxsum.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name in (module_name, "arxsum.commands"):
                continue
            raise
        module.register(app)


_register_subcommands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
