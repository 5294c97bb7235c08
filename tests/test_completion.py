"""Shell completion through the real entry point, the way bash, zsh and fish call it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

ENTRY = "import sys; sys.argv[0] = 'arxsum'; from arxsum.cli import main; main()"


def complete(shell: str, line: str, cwd) -> list[str]:
    words = line.split()
    env = {**os.environ, "_ARXSUM_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - (0 if line.endswith(" ") else 1))}
    else:
        env |= {"_TYPER_COMPLETE_ARGS": line}
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    result = subprocess.run([sys.executable, "-c", ENTRY], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(shell, tmp_path):
    """--show-completion writes the script of the shell it is run from (Typer asks the parent process),
    so it is run from a shell of that name: bash itself, or a copy of bash named zsh or fish (neither
    need be installed; the name is what the detection reads). Not from make's or pytest's sh."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to run the command from")
    parent = tmp_path / shell
    shutil.copy(bash, parent)
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(ENTRY)} --show-completion; exit $?"  # no exec
    result = subprocess.run([str(parent), "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "_ARXSUM_COMPLETE" in result.stdout and "arxsum" in result.stdout
    assert {"bash": "complete_bash", "zsh": "compdef", "fish": "complete --command arxsum"}[shell] in result.stdout
    if shell == "bash":
        assert "-o default" in result.stdout  # paths when arxsum offers nothing


def test_bash_completes_subcommands_options_enums_and_paths(tmp_path):
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-")
    (tmp_path / "papers").mkdir()
    assert complete("bash", "arxsum ", tmp_path)[:4] == ["summarize", "extract", "eval", "env"]
    assert "--dtype" in complete("bash", "arxsum --dt", tmp_path)  # the default command's options
    assert complete("bash", "arxsum paper.pdf --dtype ", tmp_path) == ["auto", "float32", "bfloat16", "float16"]
    assert complete("bash", "arxsum paper.pdf -f ", tmp_path) == ["text", "json", "jsonl", "md"]
    assert "cuda:0" in complete("bash", "arxsum paper.pdf --device cu", tmp_path)
    assert complete("bash", "arxsum eval --predictions p.jsonl d.jsonl --form", tmp_path) == ["--format"]
    assert complete("bash", "arxsum pa", tmp_path) in ([], [""])  # no command: the shell lists paths
    (tmp_path / "ex.pdf").write_bytes(b"%PDF-")
    assert complete("bash", "arxsum ex", tmp_path) == ["extract", "ex.pdf"]  # a command and a paper


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_the_same_candidates(tmp_path, shell):
    out = "\n".join(complete(shell, "arxsum paper.pdf --dtype ", tmp_path))
    for value in ("float32", "bfloat16"):
        assert value in out
    assert "extract" in "\n".join(complete(shell, "arxsum ex", tmp_path))
