"""Which instruction set the CPU kernels are built for, and where they and their plans are kept.

Without torch (cpukernels needs it): `arxsum env` reads these too, and must start instantly.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

# One source, compiled per instruction set (as PyTorch's aten/src/ATen/native/cpu/ kernels are): the
# same code over the machine's vectors, 16 floats with AVX-512, 8 with AVX2 + FMA. ARXSUM_CPU_ISA
# forces one.
ISAS = ("avx512", "avx2")
ISA_CPU_FLAGS = {"avx512": ("avx512f",), "avx2": ("avx2", "fma")}
ISA_CHOICES = ("auto", *ISAS, "none")


class Unavailable(Exception):
    """Why the kernels cannot run here (one line)."""


def cpuinfo(field: str) -> str:
    """The first `field` line of /proc/cpuinfo ("flags", "model name"), or "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_isas() -> list[str]:
    """The instruction sets of ISAS that this CPU runs, best first."""
    flags = set(cpuinfo("flags").split())
    return [isa for isa in ISAS if all(f in flags for f in ISA_CPU_FLAGS[isa])]


def requested_isa() -> str:
    """ARXSUM_CPU_ISA (auto, avx512, avx2, none); ARXSUM_CPU_KERNELS=0 means none."""
    if os.environ.get("ARXSUM_CPU_KERNELS", "1") == "0":
        return "none"
    isa = os.environ.get("ARXSUM_CPU_ISA", "auto").strip().lower() or "auto"
    if isa not in ISA_CHOICES:
        raise Unavailable(f"ARXSUM_CPU_ISA={isa} is not one of {', '.join(ISA_CHOICES)}")
    return isa


def choose_isa() -> str:
    """The instruction set to build for here, or Unavailable with the reason."""
    isa = requested_isa()
    if isa == "none":
        why = "ARXSUM_CPU_KERNELS=0" if os.environ.get("ARXSUM_CPU_KERNELS", "1") == "0" else "ARXSUM_CPU_ISA=none"
        raise Unavailable(f"turned off by {why}")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Unavailable(f"built for Linux on x86-64, not {platform.system()} on {platform.machine()}")
    runs = cpu_isas()
    if isa == "auto":
        if not runs:
            raise Unavailable("the CPU has neither AVX-512 nor AVX2 with FMA")
        return runs[0]
    if isa not in runs:
        raise Unavailable(f"ARXSUM_CPU_ISA={isa}, but this CPU does not run {isa}")
    return isa


def cache_dir() -> Path:
    return Path(os.environ.get("ARXSUM_CACHE_DIR") or Path.home() / ".cache" / "arxsum")


def saved_plans(cache: Path | None = None) -> list[dict]:
    """The CPU plans saved for this CPU (cpuplan), newest first: their key, choices and date."""
    folder = (cache or cache_dir()) / "kernels"
    model = cpuinfo("model name")
    plans = []
    for path in sorted(folder.glob("plan-*.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if data["key"]["cpu"] == model:
                plans.append(data)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return plans
