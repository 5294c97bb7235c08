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
    """The CPU implementations arxsum uses on this machine, read from the kernel cache without torch.

    The place for issue 18's "chosen CPU implementations": the kernels' module records its choices
    in the cache and this reads them back. Until it does, this reports what the cache holds.
    """
    kernels = cache / "kernels"
    if os.environ.get("ARXSUM_CPU_KERNELS", "1") == "0":
        return [("cpu kernels", "off (ARXSUM_CPU_KERNELS=0)")]
    built = sorted(kernels.glob("cpukernels-*.so")) if kernels.is_dir() else []
    if not built:
        return [("cpu kernels", "not built yet (compiled on the first CPU summary)")]
    return [("cpu kernels", f"{len(built)} build{'s' if len(built) > 1 else ''} in {kernels}")]


def register(app: typer.Typer) -> None:
    app.command("env", help=HELP, short_help="Versions, hardware and settings.")(env_command)
