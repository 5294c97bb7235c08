"""The bench harness at tiny size: its JSON has every row and figure, and arxsum's float32 tokens equal
the seed pipeline's. The figures themselves are not checked (the full bench is `make bench`)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
FIGURES = ("import_s", "load_s", "encoder_s", "generate_s", "decode_step_s", "end_to_end_s", "peak_rss_mb",
           "papers_per_s", "tokens")


def load_bench():
    spec = importlib.util.spec_from_file_location("arxsum_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def ref_python() -> str | None:
    path = os.environ.get("ARXSUM_REF_PYTHON") or str(ROOT / ".venv-ref" / "bin" / "python")
    return path if Path(path).is_file() else None


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")  # the tiny checkpoint, built once for both runs


def run_bench(tmp_path: Path, cache_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--steps", "4", "--tokens", "128",
                           "--short-tokens", "0", "--cache-dir", str(cache_dir), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def test_arxsum_only_float32_and_bfloat16(tmp_path, cache_dir):
    proc, report = run_bench(tmp_path, cache_dir, "--no-ref", "--dtype", "float32", "bfloat16", "--batch", "1",
                             "--paper", "none")
    assert [r["name"] for r in report["rows"]] == ["float32 1x128 4 steps", "bfloat16 1x128 4 steps"]
    for row in report["rows"]:
        assert "seed" not in row
        assert all(k in row["arxsum"] for k in FIGURES)
        assert len(row["arxsum"]["tokens"]) == 1 and len(row["arxsum"]["tokens"][0]) == 4  # min = max length
    assert set(report["precision"]["bfloat16"]) == {"arxsum"}
    assert report["precision"]["bfloat16"]["arxsum"]["papers"] == 1
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"]
    assert "| float32 1x128 4 steps | arxsum |" in proc.stdout  # the table is on stdout, progress on stderr
    assert "[1/2] float32 1x128 4 steps" in proc.stderr and "[1/2]" not in proc.stdout


def test_side_by_side_with_the_seed_pipeline(tmp_path, cache_dir):
    ref = ref_python()
    if ref is None:
        pytest.skip("no reference venv (make ref-venv)")
    paper = tmp_path / "paper.txt"
    paper.write_text("we study the dynamics of a driven quantum system coupled to a thermal bath . " * 40)
    proc, report = run_bench(tmp_path, cache_dir, "--ref-python", ref, "--dtype", "float32", "--batch", "2",
                             "--paper", str(paper))
    assert [r["name"] for r in report["rows"]] == ["float32 1x128 4 steps", "float32 2x128 4 steps"]
    for row in report["rows"]:
        for side in ("arxsum", "seed"):
            assert all(k in row[side] for k in FIGURES), (side, row[side])
            assert row[side]["tokenize_s"] > 0 and row[side]["input_tokens"] > 100
        assert row["tokens_identical"] is True, row["name"]
        assert row["speedup_end_to_end"] > 0 and row["speedup_generate"] > 0 and row["peak_rss_ratio"] > 0
    assert len(report["rows"][1]["seed"]["tokens"]) == 2
    assert report["extraction"]["chars"] > 1000
    assert report["rows"][0]["seed"]["versions"]["transformers"] == "4.40.2"
    comparison = [line for line in proc.stdout.splitlines() if line.startswith("| float32 2x128 4 steps | ")
                  and "arxsum" not in line and "seed" not in line and "%)" not in line]
    assert len(comparison) == 1 and "| yes |" in comparison[0]
    limits = report["limits"]  # this machine's own limits, measured in the same run
    assert limits["stream_gbs"] > 0.5 and limits["gemm_gflops"]["float32"] > 1 and limits["start_s"] > 0
    for row in report["rows"]:
        assert set(row["floor"]) == set(row["fraction_of_floor"]) == {"encoder_s", "decode_step_s", "end_to_end_s"}
        assert all(0 < f for f in row["fraction_of_floor"].values())
        # the step's floor at the stream rate measured just before and after the row
        before, after = row["arxsum"]["stream_gbs_around"]
        assert before > 0.5 and after > 0.5 and row["floor_stream_gbs"] == pytest.approx((before + after) / 2)
    assert "This machine's limits, measured in this run" in proc.stdout


def test_floors_of_the_real_model():
    """The floor's arithmetic at the published model's shapes: 1.88 TFLOP for the encoder and the cross
    keys/values at 16384 tokens; a step reads 958.9 MB in float32 (479.5 MB in bfloat16)."""
    import floors

    from builders import real_architecture_config

    config = real_architecture_config()
    assert floors.encoder_flop(config, 16384) == pytest.approx(1.882e12, rel=1e-3)
    assert floors.step_bytes(config, 16384, "float32") == 958_934_016
    assert floors.step_bytes(config, 16384, "bfloat16") == 958_934_016 / 2
    limits = {"stream_gbs": 20.0, "gemm_gflops": {"float32": 200.0}, "start_s": 1.0}
    f = floors.floors(limits, config, 16384, 320, "float32")
    assert f["encoder_s"] == pytest.approx(1.882e12 / 200e9, rel=1e-3)
    assert f["decode_step_s"] == pytest.approx(958_934_016 / 20e9)
    assert f["end_to_end_s"] == pytest.approx(1.0 + f["encoder_s"] + 319 * f["decode_step_s"])
    assert floors.floors(limits, config, 16384, 320, "bfloat16") is None  # no GEMM rate measured for it
    around = floors.floors(limits, config, 16384, 320, "float32", stream=40.0)  # the row's own stream rate
    assert around["decode_step_s"] == pytest.approx(f["decode_step_s"] / 2) and around["encoder_s"] == f["encoder_s"]


def test_plan_rows():
    settings = {"dtypes": ["float32", "bfloat16"], "device": "cpu", "tokens": 16384, "short_tokens": 4096,
                "steps": [64, 320], "batch": 4, "gpu_batches": [8], "only": None, "eos_bias": 0.0, "compaction": True}
    names = [c.name for c in bench.plan(settings)]
    assert names[:4] == ["float32 1x16384 64 steps", "float32 1x16384 320 steps", "float32 1x4096 320 steps",
                         "float32 4x16384 320 steps"]
    assert len(names) == 8
    gpu = bench.plan(dict(settings, device="cuda", gpu_batches=[8, 16], only=["bfloat16"]))
    assert [c.name for c in gpu] == ["bfloat16 8x16384 320 steps", "bfloat16 16x16384 320 steps"]
    ending = bench.plan(dict(settings, device="cuda", only=["bfloat16"], eos_bias=8.5, compaction=False))
    assert [c.name for c in ending] == ["bfloat16 8x16384 320 steps eos+8.5 no compaction"]


def test_precision_counts_papers_equal_to_float32():
    def row(dtype, arxsum, seed):
        return {"dtype": dtype, "tokens": 8, "batch": 2, "steps": 3, "arxsum": {"tokens": arxsum},
                "seed": {"tokens": seed}}

    rows = [row("float32", [[2, 0, 5], [2, 0, 6]], [[2, 0, 5], [2, 0, 6]]),
            row("bfloat16", [[2, 0, 5], [2, 0, 7]], [[2, 9, 5], [2, 0, 6]])]
    totals = bench.precision(rows)
    assert totals["bfloat16"]["arxsum"] == {"equal": 1, "papers": 2, "fraction": 0.5, "mean_common_prefix": 2.5}
    assert totals["bfloat16"]["seed"]["equal"] == 1 and totals["bfloat16"]["seed"]["mean_common_prefix"] == 2.0
    assert rows[1]["equals_float32"]["arxsum"] == {"equal": 1, "papers": 2}


def test_bfloat16_speedup_is_against_the_seed_in_float32():
    rows = [{"dtype": "float32", "tokens": 8, "batch": 1, "steps": 3, "seed": {"end_to_end_s": 12.0},
             "arxsum": {"end_to_end_s": 4.0}},
            {"dtype": "bfloat16", "tokens": 8, "batch": 1, "steps": 3, "seed": {"end_to_end_s": 30.0},
             "arxsum": {"end_to_end_s": 1.5}}]
    bench.against_seed_float32(rows)
    assert "speedup_vs_seed_float32" not in rows[0] and rows[1]["speedup_vs_seed_float32"] == 8.0


@pytest.mark.parametrize("argv, message", [
    ([], "--ref-python"),
    (["--no-ref", "--dtype", "float16"], "float16 is for GPUs"),
    (["--ref-python", "/nonexistent/python"], "no such file"),
    (["--no-ref", "--paper", "/nonexistent.pdf"], "no such file"),
    (["--ref-python", sys.executable, "--eos-bias", "8"], "--no-ref"),
    (["--no-ref", "--no-compaction"], "only means something with --eos-bias"),
])
def test_usage_errors(argv, message, capsys):
    assert bench.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench: error:") and message in err


def test_cuda_without_a_gpu_is_a_clear_error(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--device", "cuda"]) == 1
    assert "no CUDA device" in capsys.readouterr().err


FIDELITY = ROOT / "benchmarks" / "fidelity.py"


def test_fidelity_errors_are_zero_for_equal_log_probs_and_grow_with_noise():
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fidelity

    gen = torch.Generator().manual_seed(0)
    full = torch.log_softmax(torch.randn(2, 6, 50, generator=gen), -1)
    targets = torch.randint(0, 50, (2, 5), generator=gen)
    same = fidelity.errors(full, full.clone(), targets)
    assert same["mean_abs_logp_error"] == 0 and same["mean_kl"] == 0 and same["top1_agreement"] == 1
    noisy = fidelity.errors(full, torch.log_softmax(full + 0.3 * torch.randn(full.shape, generator=gen), -1), targets)
    assert noisy["mean_kl"] > 0 and noisy["mean_abs_logp_error"] > 0 and noisy["steps"] == 5


def test_fidelity_tiny_run_measures_both_sides(tmp_path, cache_dir):
    """Both sides' bfloat16 against their float32 on the tiny checkpoint; their float32 log-probs agree."""
    ref = ref_python()
    out = tmp_path / "fidelity.json"
    args = ["--ref-python", ref] if ref else ["--no-ref"]
    proc = subprocess.run([sys.executable, str(FIDELITY), "--tiny", "--tokens", "100", "--papers", "2", "--steps", "6",
                           "--cache-dir", str(cache_dir), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    sides = report["lengths"][0]["sides"]
    assert set(sides) == ({"arxsum", "seed"} if ref else {"arxsum"})
    for e in sides.values():
        assert e["steps"] == 5 and 0 <= e["top1_agreement"] <= 1 and e["mean_kl"] >= 0
    if ref:
        assert report["lengths"][0]["float32_arxsum_vs_seed_max_abs"] < 1e-3
    assert "teacher-forced" in proc.stdout


def test_a_plan_measured_on_a_busy_machine_is_measured_again_before_the_rows(monkeypatch):
    """Not saved when busy (cpuplan.busy), a plan would be measured again inside every row's timed
    load: the bench's preparation measures again instead, up to PREPARE_TRIES times."""
    from arxsum import cpuplan, summarizer

    plans = [cpuplan.CpuPlan("kernels", "kernels", "kernels", "-", how="measured", cpu_share=share, measured_s=4.0)
             for share in (0.6, 0.95, 0.95)]
    calls = []

    def from_pretrained(*args, **kwargs):
        calls.append(args)
        return type("Loaded", (), {"cpu_plan": plans[len(calls) - 1]})()

    monkeypatch.setattr(summarizer.Summarizer, "from_pretrained", staticmethod(from_pretrained))
    monkeypatch.setattr(bench, "say", lambda message: None)
    assert bench.prepare_worker("checkpoint", "bfloat16")["tries"] == 2 and len(calls) == 2  # quiet at the second
    calls.clear()
    plans[:] = [plans[0]] * 3  # busy every time: the rows go on, measuring their own
    assert bench.prepare_worker("checkpoint", "bfloat16")["tries"] == bench.PREPARE_TRIES == len(calls)
