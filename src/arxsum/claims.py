"""Cooperating runs: several `arxsum ... --output-dir DIR` processes split the inputs through claim files.

Before an input is read, its run creates `.<output name>.arxsum-claim` beside the output, atomically
(a hard link of a finished temp file, or O_EXCL where links are not supported), holding the host,
its boot id, the pid, the process's start time and a random token. Another run that finds the claim:

- on the same host (same boot): skips the input while that process lives, and takes it over when
  the process is gone (SIGKILL, a crash) or the pid now belongs to a process started later;
- from another host (or another boot): skips it while the claim's mtime moves (its owner touches
  it every HEARTBEAT_S seconds) and takes it over once the mtime has stood still for STALE_S seconds
  of this run's own clock (no clock agreement between hosts is needed; NFS caches attributes for up
  to 60 s, hence the margin).

A stale claim is removed under a short break lock (`...arxsum-claim-break`), re-reading it first, so
two runs that both see it stale never delete a fresh claim. A claim is removed when its input is
written or fails, and all of a run's claims when it stops (Ctrl-C, kill).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_S = 20.0
STALE_S = float(os.environ.get("ARXSUM_CLAIM_STALE_S", "180"))
CLAIM_SUFFIX = ".arxsum-claim"
BREAK_SUFFIX = ".arxsum-claim-break"


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


HOST = socket.gethostname()
BOOT = _read_text("/proc/sys/kernel/random/boot_id")
HOST_KEY = hashlib.sha1(f"{HOST}\0{BOOT}".encode()).hexdigest()[:8]  # in temp names: same host, same boot


def process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, Linux), None if unknown or not running."""
    stat = _read_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    try:
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime, in clock ticks
        btime = next(int(line.split()[1]) for line in _read_text("/proc/stat").splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError, StopIteration, OSError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def local_process_gone(pid: int, started: float | None) -> bool:
    """A process of this host is gone: not running, or the pid now names a process started later."""
    if pid == os.getpid():
        return started is not None and abs((process_start(pid) or started) - started) > 2
    if not pid_alive(pid):
        return True
    now_started = process_start(pid)
    return started is not None and now_started is not None and abs(now_started - started) > 2


@dataclass(frozen=True)
class Owner:
    host: str
    boot: str
    pid: int
    started: float | None
    token: str

    @staticmethod
    def me() -> Owner:
        return Owner(HOST, BOOT, os.getpid(), process_start(os.getpid()), secrets.token_hex(8))

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "boot": self.boot, "pid": self.pid, "started": self.started,
                           "token": self.token})

    @staticmethod
    def parse(text: str) -> Owner | None:
        try:
            d = json.loads(text)
            return Owner(str(d["host"]), str(d.get("boot", "")), int(d["pid"]), d.get("started"), str(d["token"]))
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def local(self) -> bool:
        return self.host == HOST and self.boot == BOOT

    def describe(self) -> str:
        return f"pid {self.pid}" + ("" if self.host == HOST else f" on {self.host}")


def claim_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{CLAIM_SUFFIX}")


class Claims:
    """The claims this run holds, with the heartbeat that keeps them fresh for other hosts."""

    def __init__(self, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.stale_s, self.heartbeat_s = stale_s, heartbeat_s
        self.me = Owner.me()
        self.held: set[Path] = set()
        self._seen: dict[Path, tuple[str, float, float]] = {}  # claim -> (token, mtime, since) of others
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back --------------------------------------------------------------

    def acquire(self, output: Path) -> Owner | None:
        """Claim `output`'s input: None when it is ours now, else the live owner that holds it."""
        path = claim_path(output)
        owner = None
        for _ in range(5):
            if self._create(path, self.me.to_json()):
                with self._lock:
                    self.held.add(path)
                self._start_heartbeat()
                return None
            owner, mtime = self._read(path)
            if mtime is None:
                continue  # released meanwhile: try again
            if not self._is_stale(path, owner, mtime) or not self._break(path, owner):
                return owner or Owner("?", "", 0, None, "")
        return owner or Owner("?", "", 0, None, "")

    def release(self, output: Path) -> None:
        path = claim_path(output)
        with self._lock:
            if path not in self.held:
                return
            self.held.discard(path)
        _unlink(path)

    def close(self) -> None:
        """Give back every claim still held (the run ends or stops) and stop the heartbeat."""
        self._stop.set()
        with self._lock:
            held, self.held = list(self.held), set()
        for path in held:
            _unlink(path)

    def sweep(self, outputs: list[Path], *, overwrite: bool) -> None:
        """Remove claims and break locks left by dead runs beside outputs that exist (litter: the
        input is done). With --overwrite only those of dead processes on this host."""
        for output in outputs:
            for path in (claim_path(output), output.with_name(f".{output.name}{BREAK_SUFFIX}")):
                if path in self.held or not os.path.lexists(path) or not output.exists():
                    continue
                owner, mtime = self._read(path)
                if mtime is None:
                    continue
                if owner is not None and owner.local:
                    gone = local_process_gone(owner.pid, owner.started)
                else:
                    gone = not overwrite and time.time() - mtime > self.stale_s
                if gone:
                    _unlink(path)

    # -- the parts ---------------------------------------------------------------------------

    @staticmethod
    def _create(path: Path, content: str) -> bool:
        """Atomically create `path` holding `content`; False if it exists."""
        from arxsum.writers import create_temp

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp(path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some network or FUSE file systems): O_EXCL
                try:
                    fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    return False
                with os.fdopen(fd2, "w", encoding="utf-8") as f:
                    f.write(content)
                return True
        finally:
            _unlink(Path(tmp))

    @staticmethod
    def _read(path: Path) -> tuple[Owner | None, float | None]:
        try:
            mtime = path.stat().st_mtime
            return Owner.parse(path.read_text(encoding="utf-8")), mtime
        except (OSError, UnicodeDecodeError):
            return None, None

    def _is_stale(self, path: Path, owner: Owner | None, mtime: float) -> bool:
        if owner is not None and owner.local:
            return local_process_gone(owner.pid, owner.started)
        # another host (or unreadable, e.g. caught mid-write by O_EXCL): stale once its mtime stands still
        token = owner.token if owner else ""
        now = time.monotonic()
        seen = self._seen.get(path)
        if seen is None or seen[0] != token or seen[1] != mtime:
            self._seen[path] = (token, mtime, now)
            return False
        return now - seen[2] >= self.stale_s

    def _break(self, path: Path, stale: Owner | None) -> bool:
        """Remove the stale claim at `path`, unless it changed; False if another run is breaking it."""
        lock = path.with_name(path.name[: -len(CLAIM_SUFFIX)] + BREAK_SUFFIX)
        if not self._create(lock, self.me.to_json()):
            holder, mtime = self._read(lock)
            if mtime is not None and ((holder is not None and holder.local
                                       and local_process_gone(holder.pid, holder.started))
                                      or time.time() - mtime > 60):
                _unlink(lock)  # its breaker died in the middle of it
            return False
        try:
            current, _ = self._read(path)
            if stale is None or (current is not None and current.token == stale.token):
                _unlink(path)
            self._seen.pop(path, None)
        finally:
            _unlink(lock)
        return True

    def _start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="arxsum-claims", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                held = list(self.held)
            for path in held:
                try:
                    os.utime(path)
                except OSError:
                    pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
