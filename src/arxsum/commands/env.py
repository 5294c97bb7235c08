"""`arxsum env`: what this installation runs on, for bug reports and for checking a machine.

Instant by design: nothing here imports torch or the model stack. Package versions come from
their metadata, the CPU from /proc/cpuinfo, GPUs from the driver's /proc entries; what needs torch
itself (CUDA devices as torch sees them) is left to a command that loads the model. The main CLI
calls `register(app)`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import typer

from arxsum import __version__
from arxsum.options import DEFAULT_MODEL

PACKAGES = ("torch", "tokenizers", "safetensors", "huggingface-hub", "pypdf", "typer", "rich",
            "rouge-score", "ray")
HELP = ("Print the versions, CPU, GPUs and settings this installation runs with (for bug reports). "
        "Loads no model and imports no torch.")


def env_command() -> None:
    for key, value in environment():
        typer.echo(f"{key + ':':<18}{value}")


def environment() -> list[tuple[str, str]]:
    """(label, value) rows, in the order they are printed."""
    rows = [("arxsum", __version__),
            ("python", f"{platform.python_version()} ({sys.executable})"),
            ("platform", f"{platform.system()} {platform.release()} {platform.machine()}")]
    rows += [(name, package_version(name)) for name in PACKAGES]
    rows += cpu_rows()
    rows.append(("gpus", gpu_summary()))
    rows += cpu_kernel_rows(cache_dir())
    rows += [("model", os.environ.get("ARXSUM_MODEL") or f"{DEFAULT_MODEL} (default)"),
             ("device", os.environ.get("ARXSUM_DEVICE") or "auto (default)"),
             ("cache", str(cache_dir()))]
    return rows


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cache_dir() -> Path:
    """Where arxsum keeps downloads and compiled kernels (as `arxsum.cpukernels` and the CLI do)."""
    return Path(os.environ.get("ARXSUM_CACHE_DIR") or Path.home() / ".cache" / "arxsum")


def cpu_rows() -> list[tuple[str, str]]:
    info = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    flags = set(info.get("flags", "").split())
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return [("cpu", f"{info.get('model name', platform.processor() or 'unknown')}, {usable} usable cores"),
            ("cpu features", " ".join(wanted) or "none of avx2, avx512f, avx512_bf16, amx_bf16")]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty elsewhere)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def gpu_summary() -> str:
    """NVIDIA GPUs the driver lists (without CUDA or torch), and CUDA_VISIBLE_DEVICES if set."""
    root = Path("/proc/driver/nvidia/gpus")
    names = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            try:
                text = (entry / "information").read_text(errors="replace")
            except OSError:
                continue
            model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                          if line.startswith("Model:")), "NVIDIA GPU")
            names.append(model)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    found = ", ".join(names) if names else "none found by the NVIDIA driver"
    return found + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")


def cpu_kernel_rows(cache: Path) -> list[tuple[str, str]]:
    """The CPU implementations arxsum uses on this machine, read without torch: the kernels' instruction
    set (cpuisa), their builds in the cache, and per dtype the plan cpuplan measured (or is forced to)."""
    from arxsum.cpuisa import Unavailable, choose_isa, cpu_isas, saved_plans

    try:
        isa = choose_isa()
        asked = os.environ.get("ARXSUM_CPU_ISA", "auto")
        rows = [("cpu kernels isa", f"{isa} (ARXSUM_CPU_ISA={asked}; this CPU runs: {', '.join(cpu_isas())})")]
    except Unavailable as e:
        return [("cpu kernels", f"off: {e}")]
    folder = cache / "kernels"
    built = sorted(p.name for p in folder.glob(f"cpukernels-{isa}-*.so")) if folder.is_dir() else []
    rows.append(("cpu kernels", f"built in {folder}" if built else "not built yet (compiled on the first CPU summary)"))
    forced = os.environ.get("ARXSUM_CPU_PLAN", "").strip()
    if forced not in ("", "measure", "auto"):
        rows.append(("cpu plan", f"forced by ARXSUM_CPU_PLAN={forced}"))
    shown = set()
    for plan in saved_plans(cache):
        key = plan["key"]
        if key.get("isa") != isa or key["dtype"] in shown:
            continue
        shown.add(key["dtype"])
        choices = ", ".join(f"{k} {v}" for k, v in plan["choices"].items() if v != "-")
        rows.append((f"plan {key['dtype']}",
                     f"{choices} (measured {plan.get('created', '?')}, torch {key['torch']}, {key['threads']} threads)"))
    if not shown:
        rows.append(("cpu plan", "not measured yet (timed on the first CPU summary, then saved)"))
    return rows


def register(app: typer.Typer) -> None:
    app.command("env", help=HELP, short_help="Versions, hardware and settings.")(env_command)
