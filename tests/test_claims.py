"""Cooperating runs on one --output-dir: claims, take-overs, and real processes (one SIGKILLed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arxsum.claims import HOST, Claims, Owner, claim_path, process_start

# One `arxsum.runner.run` over a folder of text papers, in its own process, with a summarizer that
# takes DELAY seconds a paper and logs "pid name" when it starts one.
DRIVER = """
import sys, os, time, types
from arxsum.runner import RunConfig, run
papers, out, delay, log = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

class Slow:
    name, device, max_positions, decoder_positions = "slow-fake", "cpu", 64, 512
    def count_tokens(self, text):
        return len(text.split()) + 2
    def summarize_batch(self, texts, options=None, max_input_tokens=None):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {texts[0].split()[0]}\\n")
        time.sleep(delay)
        return [types.SimpleNamespace(text=" ".join(t.split()[:3]), token_ids=[2], input_tokens=5,
                                      original_tokens=5, truncated=False) for t in texts]

report = run(RunConfig(inputs=[papers], output_dir=__import__("pathlib").Path(out), format="json",
                       timeout=0, workers=1, batch_size=1), load_summarizer=Slow)
print(" ".join(f"{o.status}" for o in report.outcomes))
sys.exit(report.exit_code)
"""


def start(papers: Path, out: Path, log: Path, delay: float, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(papers), str(out), str(delay), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def make_papers(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True)
    names = [f"p{i:02d}" for i in range(n)]
    for name in names:
        (folder / f"{name}.txt").write_text(" ".join(f"{name}w{k}" for k in range(20)))
    return names


def starts(log: Path) -> dict[str, list[int]]:
    """paper -> pids that started summarizing it, in order."""
    out: dict[str, list[int]] = {}
    for line in log.read_text().splitlines():
        pid, word = line.split()
        out.setdefault(word.split("w")[0], []).append(int(pid))
    return out


def test_three_runs_one_killed_one_late_leave_one_summary_each_and_nothing_else(tmp_path):
    names = make_papers(tmp_path / "papers", 12)
    out, log = tmp_path / "out", tmp_path / "log"
    a = start(tmp_path / "papers", out, log, 0.5)
    b = start(tmp_path / "papers", out, log, 0.5)
    deadline = time.time() + 60
    while not (log.exists() and {int(line.split()[0]) for line in log.read_text().splitlines()} >= {a.pid}):
        assert time.time() < deadline, "run a never started a paper"
        time.sleep(0.05)
    time.sleep(0.2)
    a.send_signal(signal.SIGKILL)  # mid-paper: its claims stay behind, its pid is gone
    a.wait()
    c = start(tmp_path / "papers", out, log, 0.5)  # started late
    for proc in (b, c):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    # exactly one valid summary per paper, and nothing else: no claim, no temp file
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == [f"{name}.json" for name in names]
    for name in names:
        assert json.loads((out / f"{name}.json").read_text())["summary"].lower().startswith(f"{name}w0")
    # nothing summarized twice while its claimer lived: a paper started again was the killed run's
    for name, pids in starts(log).items():
        assert all(pid == a.pid for pid in pids[:-1]), (name, pids)
    assert len(starts(log)) == len(names)
    assert {pid for pids in starts(log).values() for pid in pids} - {a.pid} <= {b.pid, c.pid}


def test_the_report_says_what_other_runs_did(tmp_path):
    make_papers(tmp_path / "papers", 6)
    out, log = tmp_path / "out", tmp_path / "log"
    runs = [start(tmp_path / "papers", out, log, 0.4) for _ in range(2)]
    results = [proc.communicate(timeout=120) for proc in runs]
    statuses = [stdout.split() for stdout, _ in results]
    assert all(proc.returncode == 0 for proc in runs), [err for _, err in results]
    # each paper was done by exactly one run; the other names it as done elsewhere
    for column in zip(*statuses, strict=True):
        assert sorted(column) in (["done", "elsewhere"], ["done", "skipped"]), column
    assert any("elsewhere" in s for s in statuses)
    assert any("done by other runs" in err for _, err in results)
    assert len(starts(log)) == 6 and all(len(p) == 1 for p in starts(log).values())


# -- the claim rules, in-process -------------------------------------------------------------

def write_claim(output: Path, owner: Owner, age: float = 0.0) -> Path:
    path = claim_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(owner.to_json())
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_live_local_claim_is_respected_and_a_dead_ones_taken_over(tmp_path):
    output = tmp_path / "out" / "paper.json"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        live = Owner(HOST, Owner.me().boot, sleeper.pid, process_start(sleeper.pid), "t-live")
        write_claim(output, live)
        claims = Claims()
        assert claims.acquire(output) == live
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claims.acquire(output) is None  # its process is gone: ours now
    assert json.loads(claim_path(output).read_text())["pid"] == os.getpid()
    claims.release(output)
    assert not claim_path(output).exists()


def test_a_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    output = tmp_path / "paper.json"
    parent = os.getppid()
    write_claim(output, Owner(HOST, Owner.me().boot, parent, (process_start(parent) or 0) - 1000, "t-old"))
    assert Claims().acquire(output) is None


def test_another_hosts_claim_is_stale_once_its_mtime_stands_still(tmp_path):
    output = tmp_path / "paper.json"
    foreign = Owner("elsewhere.example", "boot-x", 4242, None, "t-far")
    path = write_claim(output, foreign, age=10_000)
    claims = Claims(stale_s=0.3)
    assert claims.acquire(output) == foreign  # first sight: no judgement on another host's clock
    os.utime(path)  # its owner's heartbeat
    time.sleep(0.2)
    assert claims.acquire(output) == foreign  # moved: alive
    time.sleep(0.4)
    assert claims.acquire(output) is None  # still for 0.3 s of our clock: taken over
    claims.close()
    assert not path.exists()


def test_only_one_of_two_claimants_wins(tmp_path):
    output = tmp_path / "paper.json"
    first, second = Claims(), Claims()
    assert first.acquire(output) is None
    assert second.acquire(output) is not None  # same host, live pid (ours): respected
    first.close()
    assert second.acquire(output) is None


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_and_folders_get_the_umasks_mode(tmp_path, umask):
    from arxsum.writers import AtomicOutputFile, atomic_write_text

    old = os.umask(umask)
    try:
        target = tmp_path / "out" / "sub" / "paper.json"
        atomic_write_text(target, "{}\n")
        single = AtomicOutputFile(tmp_path / "o" / "all.jsonl")
        single.stream.write("x\n")
        single.commit()
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert target.parent.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "o" / "all.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(tmp_path.rglob("*.arxsum-tmp"))
