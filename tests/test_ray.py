"""`arxsum --ray` on a local Ray instance (2 CPUs) with the tiny checkpoint, against the single-machine
run on the same folder: the same output files (byte for byte but for the timing field), the same
failures, and a rerun that skips finished papers."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from arxsum.decoding import GenerationOptions
from arxsum.distributed import GPU_WINDOW, Plan, plan_resources, run_ray
from arxsum.errors import ModelLoadError, OptionsError
from arxsum.runner import RunConfig, run

SAMPLES = Path("/work/shared/samples")
if not SAMPLES.is_dir():
    SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
OPTIONS = GenerationOptions(num_beams=2, max_length=12, min_length=0)
TEXT = ("we study the dynamics of a driven quantum system coupled to a thermal bath . the results are obtained "
        "with a perturbative expansion in the coupling and confirmed by numerical simulations .")
SECONDS = re.compile(rb'"seconds": [0-9.e+-]+')  # the one field that depends on timing


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One real PDF, text papers (two sharing a stem, one in a subfolder), and bad files."""
    root = tmp_path_factory.mktemp("papers")
    shutil.copy(SAMPLES / "papers" / "ff-jets-kerr-uniform.pdf", root)
    for name in ("not-a-pdf-garbage.pdf", "zero-pages.pdf", "scanned-no-text-ccitt.pdf",
                 "encrypted-rc4-40-userpw.pdf"):
        shutil.copy(SAMPLES / "edge" / name, root)
    (root / "notes").mkdir()
    (root / "notes" / "short.txt").write_text(TEXT)
    (root / "long.txt").write_text(" ".join([TEXT] * 30))
    (root / "a.txt").write_text(" ".join([TEXT] * 3))
    (root / "a.md").write_text(" ".join([TEXT] * 2))
    (root / "empty.txt").write_text("  \n")
    return root


def config(folder: Path, out: Path, fmt: str, **kw) -> RunConfig:
    return RunConfig(inputs=[str(folder)], output_dir=out, format=fmt, options=OPTIONS, **kw)


def single(cfg: RunConfig, model_dir: Path):
    from arxsum.summarizer import Summarizer

    err = io.StringIO()
    report = run(cfg, load_summarizer=lambda: Summarizer.from_pretrained(str(model_dir), device="cpu"),
                 stdin=io.BytesIO(), stdout=io.StringIO(), console=Console(file=err, width=200, color_system=None))
    return report, err.getvalue()


def on_ray(cfg: RunConfig, model: Path | str, workers: int | None = None):
    err = io.StringIO()
    report = run_ray(cfg, address=None, workers=workers, model=str(model), device="cpu", stdin=io.BytesIO(),
                     stdout=io.StringIO(), console=Console(file=err, width=200, color_system=None))
    return report, err.getvalue()


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def outcomes(report) -> list[tuple[str, str, str]]:
    return [(o.name, o.status, o.reason) for o in report.outcomes]


def closing_report(stderr: str) -> str:
    """From the `N done, N skipped, N failed` line on: the part that does not depend on timing."""
    return stderr[re.search(r"^arxsum: \d+ done", stderr, re.M).start():]


@pytest.fixture(scope="module")
def json_runs(ray_session, folder, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("json")
    return (single(config(folder, out / "single", "json"), tiny_model_dir),
            on_ray(config(folder, out / "ray", "json"), tiny_model_dir), out)


def test_json_files_are_the_single_machine_runs_but_for_seconds(json_runs):
    (report, err), (ray_report, ray_err), out = json_runs
    expected = files(out / "single")
    assert sorted(expected) == ["a.md.json", "a.txt.json", "ff-jets-kerr-uniform.json", "long.json",
                                "notes/short.json"]
    got = files(out / "ray")
    assert sorted(got) == sorted(expected)
    for name, data in expected.items():
        assert SECONDS.sub(b"", got[name]) == SECONDS.sub(b"", data), name
        assert SECONDS.search(got[name]), name
    assert outcomes(ray_report) == outcomes(report) and ray_report.exit_code == report.exit_code == 1
    reasons = {Path(o.name).name: o.reason for o in ray_report.failures}
    assert reasons["not-a-pdf-garbage.pdf"] == "not a PDF (no %PDF- header)"
    assert reasons["scanned-no-text-ccitt.pdf"] == "no text layer: OCR it first"
    assert len(reasons) == 5 and all(r for r in reasons.values())
    assert closing_report(ray_err) == closing_report(err)
    assert "5 done, 0 skipped, 5 failed" in ray_err and "Traceback" not in ray_err


def test_text_files_are_byte_identical_and_overwrite_redoes_them(ray_session, folder, tiny_model_dir, tmp_path):
    single(config(folder, tmp_path / "single", "text", timeout=0), tiny_model_dir)
    stale = tmp_path / "ray" / "ff-jets-kerr-uniform.txt"
    stale.parent.mkdir()
    stale.write_text("an old summary\n")
    (tmp_path / "ray" / ".long.txt.x.arxsum-tmp").write_text("left by a killed run")
    report, _ = on_ray(config(folder, tmp_path / "ray", "text", overwrite=True, timeout=0), tiny_model_dir)
    assert report.count("done") == 5 and report.count("skipped") == 0
    assert files(tmp_path / "ray") == files(tmp_path / "single")


def test_rerun_skips_finished_papers_and_redoes_a_missing_one(json_runs, folder, tiny_model_dir, tmp_path):
    _, _, out = json_runs
    shutil.copytree(out / "ray", tmp_path / "out")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.json")}
    (tmp_path / "out" / "notes" / "short.json").unlink()
    report, err = on_ray(config(folder, tmp_path / "out", "json", timeout=0), tiny_model_dir)
    assert (report.count("done"), report.count("skipped"), len(report.failures)) == (1, 4, 5)
    assert "skipping 4 inputs already summarized" in err
    for path, mtime in before.items():
        if path.name != "short.json":
            assert path.stat().st_mtime_ns == mtime, path  # untouched
    redone = (tmp_path / "out" / "notes" / "short.json").read_bytes()
    assert SECONDS.sub(b"", redone) == SECONDS.sub(b"", (out / "single" / "notes" / "short.json").read_bytes())


def test_a_model_that_does_not_load_stops_the_run_only_when_a_paper_needs_it(json_runs, folder, tmp_path):
    """Failed papers are retried on every run (they have no output file), as on one machine; when
    they fail again no paper needed the model, so a model that does not load is no error yet."""
    _, _, out = json_runs
    shutil.copytree(out / "ray", tmp_path / "out")
    report, _ = on_ray(config(folder, tmp_path / "out", "json", timeout=0), "/nonexistent/model")
    assert report.count("skipped") == 5 and len(report.failures) == 5 and report.exit_code == 1
    (tmp_path / "out" / "long.json").unlink()
    with pytest.raises(ModelLoadError, match="^model directory not found: /nonexistent/model$"):
        on_ray(config(folder, tmp_path / "out", "json", timeout=0), "/nonexistent/model")
    assert not (tmp_path / "out" / "long.json").exists()


def test_the_model_actor_sorts_its_window_by_length_into_batches(tiny_model_dir, tmp_path):
    """The two stages in-process, no Ray: failures come back first, then one output batch per model
    batch, longest papers together, as `runner.make_batches` groups them on one machine."""
    import numpy as np

    from arxsum.distributed import ExtractStage, SummarizeStage
    from arxsum.sources import ExtractOptions

    names = []
    for i, n in enumerate([10, 60, 25, 1, 40]):
        (tmp_path / f"p{i}.txt").write_text(" ".join([TEXT] * n))
        names.append(str(tmp_path / f"p{i}.txt"))
    names.append(str(tmp_path / "missing.txt"))
    rows = [json.dumps({"name": name, "kind": "file", "arxiv_id": None, "path": name}) for name in names]
    extract = ExtractStage(options=ExtractOptions(), timeout=0, raw=False, stdin=None, arxiv=None)
    extracted = extract({"index": np.arange(len(rows)), "payload": np.asarray(rows, dtype=object)})
    cfg = RunConfig(options=OPTIONS, batch_size=2, max_input_tokens=512)
    stage = SummarizeStage(cfg=cfg, model=str(tiny_model_dir), device="cpu", dtype="auto")
    out = [(list(b["index"]), [json.loads(p) for p in b["payload"]]) for b in stage(extracted)]
    assert [indices for indices, _ in out] == [[5], [1, 4], [2, 0], [3]]
    assert out[0][1][0]["reason"].startswith("cannot read")
    assert all("result" in p for _, payloads in out[1:] for p in payloads)


@pytest.mark.parametrize("cpus, gpus, workers, device, batch_size, plan", [
    (2, 0, None, "cpu", None, Plan(1, 1.0, 0, 1, 1)),  # the test instance: one model actor, one extractor
    (2, 0, 3, "auto", None, Plan(3, 1 / 3, 0, 1, 1)),  # more model actors than CPUs: they share one
    (16, 0, None, "auto", 4, Plan(8, 1.0, 0, 8, 32)),
    (32, 4, None, "auto", None, Plan(4, 1.0, 1, 28, GPU_WINDOW)),  # one model actor per GPU
    (32, 4, 2, "cuda", 8, Plan(2, 1.0, 1, 30, 64)),
    (32, 4, None, "cpu", None, Plan(16, 1.0, 0, 16, 1)),  # --device cpu leaves the GPUs alone
])
def test_plan_resources(cpus, gpus, workers, device, batch_size, plan):
    assert plan_resources(cpus, gpus, workers=workers, device=device, batch_size=batch_size) == plan


def test_plan_resources_refuses_what_cannot_run():
    with pytest.raises(OptionsError, match="no GPUs"):
        plan_resources(8, 0, workers=None, device="cuda", batch_size=None)
    with pytest.raises(OptionsError, match="--workers must be at least 1"):
        plan_resources(8, 0, workers=0, device="auto", batch_size=None)
