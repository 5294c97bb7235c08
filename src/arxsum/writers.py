"""Writers: one summary record -> text, json, jsonl or markdown, on an open text stream.

stdout, `-o FILE` and each file of `--output-dir` go through the same writers (`WRITERS`).
`OrderedSink` releases results in input order as soon as each one's turn comes, which is how
`--format jsonl` streams; `DirectorySink` writes one file per input, atomically.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO


@dataclass
class Result:
    """What is written for one paper. Field order is the JSON key order."""

    source: str
    title: str | None
    summary: str
    abstract: str | None  # the paper's own, when extraction found it
    input_tokens: int
    original_tokens: int
    truncated: bool
    model: str
    seconds: float
    kind: str | None = None  # what was read: "tex" (LaTeX source), "pdf" or "text" (arXiv: which one)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


class TextWriter:
    """The summary alone; with several inputs, a `==> source <==` line before each (like `head`)."""

    def __init__(self, stream: TextIO, *, many: bool = False) -> None:
        self.stream, self.many, self.count = stream, many, 0

    def write(self, result: Result) -> None:
        if self.many:
            self.stream.write(f"{'' if self.count == 0 else chr(10)}==> {result.source} <==\n")
        self.stream.write(result.summary + "\n")
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        pass


class JsonWriter(TextWriter):
    """One JSON object; with several inputs, one JSON array of them (streamed)."""

    def write(self, result: Result) -> None:
        text = json.dumps(result.to_dict(), ensure_ascii=False, indent=2)
        if self.many:
            text = ("[\n" if self.count == 0 else ",\n") + "  " + text.replace("\n", "\n  ")
        else:
            text += "\n"
        self.stream.write(text)
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.many:
            self.stream.write("[]\n" if self.count == 0 else "\n]\n")
            self.stream.flush()


class JsonlWriter(TextWriter):
    """One JSON object a line, flushed as each is written."""

    def write(self, result: Result) -> None:
        self.stream.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        self.count += 1
        self.stream.flush()


class MarkdownWriter(TextWriter):
    """A heading with the title (or the file name), then the summary."""

    def write(self, result: Result) -> None:
        heading = result.title or PurePosixPath(result.source).name or result.source
        sep = "" if self.count == 0 else "\n"
        self.stream.write(f"{sep}# {' '.join(heading.split())}\n\n{result.summary.strip()}\n")
        self.count += 1
        self.stream.flush()


WRITERS: dict[str, type[TextWriter]] = {
    "text": TextWriter,
    "json": JsonWriter,
    "jsonl": JsonlWriter,
    "md": MarkdownWriter,
}
EXTENSIONS = {"text": "txt", "json": "json", "jsonl": "jsonl", "md": "md"}


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename.

    An interrupt at any moment leaves either the old file (or none) or the whole new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


TEMP_SUFFIX = ".arxsum-tmp"
_TEMP_OWNER = re.compile(r"\.(\d+)-([0-9a-f]{8})\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")
FOREIGN_TEMP_AGE_S = 3600  # another host's temp this old is litter (a directory output's lives for ms)


def create_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside `path`: (fd, name). Its mode is what the umask gives a new file (mkstemp
    alone makes 0600, which a team's shared folder cannot read), and its name carries this process's
    pid and host, so that only temps of processes that are gone are ever cleaned away."""
    from arxsum.claims import HOST_KEY

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-{HOST_KEY}.",
                               suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError:
        pass
    return fd, tmp


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (os.umask() sets it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_path(output_dir: Path, rel: PurePosixPath, fmt: str) -> Path:
    """`out/<rel>.<ext>` for one input (`rel` from sources.assign_outputs)."""
    return output_dir / Path(*rel.parts).with_name(f"{rel.name}.{EXTENSIONS[fmt]}")


def remove_stale_temps(output_dir: Path) -> None:
    """Temp files a killed run (SIGKILL) could not remove; never a finished output, and never the temp
    of a run still writing (cooperating runs share the folder): on this host, those of processes that
    are gone; from other hosts, those untouched for an hour."""
    from arxsum.claims import HOST_KEY, pid_alive, process_start

    if not output_dir.is_dir():
        return
    for tmp in output_dir.rglob(f".*{TEMP_SUFFIX}"):
        owner = _TEMP_OWNER.search(tmp.name)
        try:
            mtime = tmp.stat().st_mtime
            if owner and owner.group(2) == HOST_KEY:  # gone, or its pid reused by a later process
                pid = int(owner.group(1))
                stale = not pid_alive(pid) or (process_start(pid) or 0) > mtime + 1
            else:
                stale = owner is None or time.time() - mtime > FOREIGN_TEMP_AGE_S
            if stale:
                tmp.unlink()
        except OSError:
            pass


class OrderedSink:
    """Writes results to one stream in input order: each as soon as all before it are settled."""

    def __init__(self, writer: TextWriter, order: list[int]) -> None:
        self.writer = writer
        self.order = order  # the indices that will be settled, in input order
        self.next = 0
        self.pending: dict[int, Result | None] = {}

    def put(self, index: int, result: Result | None) -> None:
        """Settle input `index` with its result (None: it failed or was skipped; nothing written)."""
        self.pending[index] = result
        while self.next < len(self.order) and self.order[self.next] in self.pending:
            ready = self.pending.pop(self.order[self.next])
            if ready is not None:
                self.writer.write(ready)
            self.next += 1

    def close(self) -> None:
        self.writer.close()


class DirectorySink:
    """One file per input under `output_dir`, each written atomically."""

    def __init__(self, output_dir: Path, fmt: str, paths: dict[int, Path]) -> None:
        self.fmt, self.paths = fmt, paths
        self.output_dir = output_dir

    def put(self, index: int, result: Result | None) -> None:
        if result is None:
            return
        import io

        buffer = io.StringIO()
        writer = WRITERS[self.fmt](buffer, many=False)
        writer.write(result)
        writer.close()
        atomic_write_text(self.paths[index], buffer.getvalue())

    def close(self) -> None:
        pass


class AtomicOutputFile:
    """`-o FILE`: written through a temp file that becomes FILE when the run ends (even interrupted).

    Every record in it is whole, since records are written one at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = create_temp(self.path)
        self.stream = os.fdopen(fd, "w", encoding="utf-8")

    def discard(self) -> None:
        if not self.stream.closed:
            self.stream.close()
            os.unlink(self.tmp)

    def commit(self) -> None:
        if self.stream.closed:
            return
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        os.replace(self.tmp, self.path)
