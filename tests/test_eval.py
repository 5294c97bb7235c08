"""`arxsum eval`: scoring equals rouge-score's own, bad data fails in one line, the model path runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import typer
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from arxsum import evaluate
from arxsum.commands.eval import register
from arxsum.errors import InputError
from arxsum.summarizer import Summarizer, Summary

FIXTURES = Path(__file__).parent / "data" / "eval"
DATA = FIXTURES / "data.jsonl"
PRED = FIXTURES / "predictions.jsonl"
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


# --- helpers -------------------------------------------------------------------------------------

@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, so that `eval` is a subcommand as in the real CLI
        pass

    register(app)
    return app


def invoke(app: typer.Typer, *args: str, **env: str):
    return CliRunner(env={"COLUMNS": "120", **env}).invoke(app, ["eval", *map(str, args)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def joined(value) -> str:
    return "\n".join(value) if isinstance(value, list) else value


def direct_scores(pairs: list[tuple[str, str]]) -> dict[str, list[float]]:
    """rouge-score on (prediction, reference) pairs, exactly as its README calls it."""
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    per_type: dict[str, list[float]] = {name: [] for name in TYPES}
    for prediction, reference in pairs:
        result = scorer.score(reference, prediction)
        for name in TYPES:
            per_type[name].append(result[name].fmeasure)
    return per_type


def fixture_pairs() -> list[tuple[str, str]]:
    refs = [joined(r["abstract"]) for r in read_jsonl(DATA)]
    preds = [p["prediction"] for p in read_jsonl(PRED)]
    return list(zip(preds, refs, strict=True))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- scoring equals rouge-score ------------------------------------------------------------------

def test_predictions_json_equals_rouge_score_computed_directly(app):
    result = invoke(app, "--predictions", PRED, DATA, "--format", "json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {*TYPES, "count"}
    assert report["count"] == 5
    direct = direct_scores(fixture_pairs())
    for name in TYPES:
        expected = sum(direct[name]) / len(direct[name]) * 100
        assert report[name]["mean"] == pytest.approx(expected, abs=1e-9)
        assert report[name]["low"] <= report[name]["mean"] <= report[name]["high"]
        assert 0 <= report[name]["low"] and report[name]["high"] <= 100
    # Lsum differs from L on the multi-sentence pairs: the lines are the sentences
    assert report["rougeLsum"]["mean"] != pytest.approx(report["rougeL"]["mean"])


def test_per_pair_scores_equal_rouge_score():
    scorer = evaluate.make_scorer()
    direct = direct_scores(fixture_pairs())
    for i, (prediction, reference) in enumerate(fixture_pairs()):
        ours = evaluate.score_pair(scorer, prediction, reference)
        assert ours == {name: direct[name][i] * 100 for name in TYPES}


def test_scores_equal_rouge_score_on_awkward_strings():
    pairs = [
        ("The cats sat.\nThey were running!", "the cat sat .\nit was running ."),
        ("", "a reference with words ."),
        ("words only", ""),
        ("  leading and trailing  \n\n blank lines \n", "leading trailing\nblank lines"),
        ("Ünïcode @xmath0 and 3.5 % numbers", "unicode @xmath0 , numbers 3.5"),
    ]
    report = evaluate.evaluate_predictions(
        [evaluate.Example(i, i + 1, None, ref) for i, (_, ref) in enumerate(pairs)], [p for p, _ in pairs])
    direct = direct_scores(pairs)
    for name in TYPES:
        assert report.scores[name].mean == pytest.approx(math.fsum(direct[name]) / len(pairs) * 100, abs=1e-9)


def test_bootstrap_is_reproducible_and_brackets_the_mean():
    per_pair = [{name: float(v) for name in TYPES} for v in (10, 20, 30, 40, 90)]
    first = evaluate.bootstrap_intervals(per_pair)
    assert first == evaluate.bootstrap_intervals(per_pair)
    iv = first["rouge1"]
    assert iv.mean == 38.0  # the plain mean, not the bootstrap's median
    assert 10 <= iv.low < iv.mean < iv.high <= 90
    many = [{name: float(v * v % 97) for name in TYPES} for v in range(60)]
    assert evaluate.bootstrap_intervals(many, seed=1)["rouge1"] != evaluate.bootstrap_intervals(many)["rouge1"]


def test_bootstrap_of_one_pair_is_the_value():
    iv = evaluate.bootstrap_intervals([{name: 42.5 for name in TYPES}])["rougeLsum"]
    assert (iv.mean, iv.low, iv.high) == (42.5, 42.5, 42.5)


# --- the table, the per-example file -------------------------------------------------------------

def test_table_goes_to_stderr_and_stdout_stays_empty(app):
    result = invoke(app, "--predictions", PRED, DATA)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    for label in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "5 examples"):
        assert label in result.stderr
    mean = sum(direct_scores(fixture_pairs())["rouge1"]) / 5 * 100
    assert f"{mean:.2f}" in result.stderr


def test_per_example_file_rescored_gives_the_same_report(app, tmp_path):
    out = tmp_path / "scored.jsonl"
    first = invoke(app, "--predictions", PRED, DATA, "-o", out, "--format", "json", "--quiet")
    assert first.exit_code == 0, first.stderr
    assert first.stderr == ""

    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["reference"] == "\n".join(read_jsonl(DATA)[1]["abstract"])
    assert set(rows[0]["scores"]) == set(TYPES)

    again = invoke(app, "--predictions", out, DATA, "--format", "json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)


def test_predictions_mode_writes_no_file_unless_asked(app, tmp_path):
    data = Path(shutil.copy(DATA, tmp_path / "data.jsonl"))
    result = invoke(app, "--predictions", PRED, data, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_output_over_the_data_is_refused(app, tmp_path):
    data = Path(shutil.copy(DATA, tmp_path / "data.jsonl"))
    result = invoke(app, "--predictions", PRED, data, "-o", data)
    assert result.exit_code == 2
    assert "--output" in result.stderr
    assert data.read_bytes() == DATA.read_bytes()


def test_limit_scores_the_first_records(app):
    result = invoke(app, "--predictions", PRED, DATA, "--limit", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 2
    direct = direct_scores(fixture_pairs()[:2])
    assert report["rouge2"]["mean"] == pytest.approx(sum(direct["rouge2"]) / 2 * 100, abs=1e-9)


def test_field_names_chosen_by_flags(app, tmp_path):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "x", "summary": ["a b c .", "d e ."]})])
    pred = write_lines(tmp_path / "p.jsonl", [json.dumps({"hyp": "a b c .\nd f ."})])
    result = invoke(app, "--predictions", pred, data, "--article-field", "text", "--abstract-field", "summary",
                    "--prediction-field", "hyp", "--format", "json")
    assert result.exit_code == 0, result.stderr
    direct = direct_scores([("a b c .\nd f .", "a b c .\nd e .")])
    assert json.loads(result.stdout)["rougeLsum"]["mean"] == pytest.approx(direct["rougeLsum"][0] * 100)


def test_split_sentences_changes_only_lsum(app, tmp_path):
    # sentences in swapped order: one line each, Lsum is plain L; split, each sentence is matched
    pairs = [("beta gamma delta . alpha omega sigma .", "alpha omega sigma . beta gamma delta ."),
             *fixture_pairs()]
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"abstract": ref}) for _, ref in pairs])
    pred = write_lines(tmp_path / "p.jsonl", [json.dumps({"prediction": p}) for p, _ in pairs])
    plain = json.loads(invoke(app, "--predictions", pred, data, "--format", "json").stdout)
    split = json.loads(invoke(app, "--predictions", pred, data, "--format", "json", "--split-sentences").stdout)

    for name in ("rouge1", "rouge2", "rougeL"):
        assert split[name] == plain[name]
    assert split["rougeLsum"]["mean"] > plain["rougeLsum"]["mean"]
    resplit = [(evaluate.one_sentence_per_line(p), evaluate.one_sentence_per_line(r)) for p, r in pairs]
    direct = direct_scores(resplit)["rougeLsum"]
    assert direct[0] == 1.0
    assert split["rougeLsum"]["mean"] == pytest.approx(sum(direct) / len(pairs) * 100, abs=1e-9)


def test_reference_field_is_the_fallback_for_abstract(app, tmp_path):
    pairs = fixture_pairs()
    both = write_lines(tmp_path / "pairs.jsonl",
                       [json.dumps({"prediction": p, "reference": r}) for p, r in pairs])
    result = invoke(app, "--predictions", both, both, "--format", "json")
    assert result.exit_code == 0, result.stderr
    direct = direct_scores(pairs)
    report = json.loads(result.stdout)
    for name in TYPES:
        assert report[name]["mean"] == pytest.approx(sum(direct[name]) / len(pairs) * 100, abs=1e-9)
    # an explicit field name is taken as given
    explicit = invoke(app, "--predictions", both, both, "--abstract-field", "abstract")
    assert explicit.exit_code == 1 and "pairs.jsonl:1: no 'abstract' field" in explicit.stderr


def test_help_says_raw_is_the_default(app):
    result = invoke(app, "--help")
    assert result.exit_code == 0
    assert "--raw" in result.stdout and "already normalised" in result.stdout


# --- bad data: one line on stderr, exit 1 --------------------------------------------------------

@pytest.mark.parametrize(("lines", "message"), [
    (['{"article": "a", "abstract": "b"}', "", "{not json"], "data.jsonl:3: not JSON"),
    (['{"article": "a", "abstract": "b"}', '{"article": "a"}'], "data.jsonl:2: no 'abstract' field"),
    (['{"article": "a", "abstract": 3}'], "data.jsonl:1: 'abstract' must be a string or a list of strings"),
    (['["article", "abstract"]'], "data.jsonl:1: expected a JSON object"),
    ([], "data.jsonl: no records"),
])
def test_bad_data_is_one_line_naming_the_line(app, tmp_path, lines, message):
    data = write_lines(tmp_path / "data.jsonl", lines)
    result = invoke(app, "--predictions", PRED, data)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_bad_bytes_name_their_line(app, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"abstract": "ok"}\n{"abstract": "caf\xe9"}\n')
    result = invoke(app, "--predictions", PRED, data)
    assert result.exit_code == 1
    assert "data.jsonl:2: not UTF-8 text" in result.stderr


@pytest.mark.parametrize(("count", "message"), [
    (4, "has 4 predictions for 5 records of"),
    (6, "has 6 predictions for 5 records of"),
])
def test_prediction_count_must_match(app, tmp_path, count, message):
    pred = write_lines(tmp_path / "p.jsonl", [json.dumps({"prediction": "x"})] * count)
    result = invoke(app, "--predictions", pred, DATA)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    if count == 4:
        assert "data.jsonl:5" in result.stderr


def test_missing_prediction_field_names_pred_line(app, tmp_path):
    pred = write_lines(tmp_path / "p.jsonl", [json.dumps({"prediction": "x"}), json.dumps({"pred": "y"})])
    result = invoke(app, "--predictions", pred, DATA, "--limit", "2")
    assert result.exit_code == 1
    assert "p.jsonl:2: no 'prediction' field" in result.stderr


def test_missing_data_file(app, tmp_path):
    result = invoke(app, "--predictions", PRED, tmp_path / "nope.jsonl")
    assert result.exit_code == 1
    assert "cannot read" in result.stderr and "nope.jsonl" in result.stderr


def test_limit_and_batch_size_must_be_positive(app):
    assert invoke(app, "--predictions", PRED, DATA, "--limit", "0").exit_code == 2
    assert invoke(app, DATA, "--batch-size", "0").exit_code == 2


def test_loading_lists_of_sentences():
    examples = evaluate.load_examples(DATA)
    second = read_jsonl(DATA)[1]
    assert examples[1].article == "\n".join(second["article"])
    assert examples[1].reference == "\n".join(second["abstract"])
    assert [e.line for e in examples] == [1, 2, 3, 4, 5]
    assert evaluate.load_examples(DATA, article_field=None)[0].article is None
    with pytest.raises(InputError, match="no 'text' field"):
        evaluate.load_examples(DATA, article_field="text")


# --- sentences -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "sentences"), [
    ("we study x . we find y .", ["we study x .", "we find y ."]),
    ("We study x. We find y! Why? Because.", ["We study x.", "We find y!", "Why?", "Because."]),
    ("as in fig. 3 and eq. ( 2 ) , e.g. here . next", ["as in fig. 3 and eq. ( 2 ) , e.g. here .", "next"]),
    ("smith et al. show that 3.5 % holds . yes", ["smith et al. show that 3.5 % holds .", "yes"]),
    ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
    ("line one\n\nline two . three", ["line one", "line two .", "three"]),
    ("", []),
])
def test_split_sentences(text, sentences):
    assert evaluate.split_sentences(text) == sentences
    once = evaluate.one_sentence_per_line(text)
    assert evaluate.one_sentence_per_line(once) == once


# --- the model path, with a stand-in summarizer --------------------------------------------------

class EchoSummarizer:
    """Summarizes by echoing the first line of the input, prefixed by a space as BART decodes."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], object, int | None]] = []

    def summarize_batch(self, texts, options, max_input_tokens=None, on_step=None):
        self.calls.append((list(texts), options, max_input_tokens))
        for length in range(2, 5) if on_step is not None else ():  # three decoding steps
            on_step(length)
        return [Summary(text=" " + t.splitlines()[0] + " so we conclude .", token_ids=[],
                        input_tokens=len(t.split()), original_tokens=len(t.split()), truncated=False)
                for t in texts]


@pytest.fixture
def echo(monkeypatch) -> EchoSummarizer:
    stand_in = EchoSummarizer()
    loaded = []

    def from_pretrained(name_or_path, *, device="auto", dtype="auto"):
        loaded.append((name_or_path, device, dtype))
        return stand_in

    monkeypatch.setattr(Summarizer, "from_pretrained", staticmethod(from_pretrained))
    stand_in.loaded = loaded
    return stand_in


def test_model_path_writes_per_example_file_beside_data(app, tmp_path, echo):
    data = Path(shutil.copy(DATA, tmp_path / "test.jsonl"))
    result = invoke(app, data, "--batch-size", "2", "--num-beams", "3", "--max-length", "40",
                    "--max-input-tokens", "100", "--model", "some/dir", "--format", "json")

    assert result.exit_code == 0, result.stderr
    assert echo.loaded == [("some/dir", "auto", "auto")]
    assert [len(texts) for texts, _, _ in echo.calls] == [2, 2, 1]
    _, options, max_input_tokens = echo.calls[0]
    assert (options.num_beams, options.max_length, options.min_length) == (3, 40, 32)
    assert max_input_tokens == 100
    assert echo.calls[0][0][1] == "\n".join(read_jsonl(DATA)[1]["article"])  # raw: as given

    out = tmp_path / "test.predictions.jsonl"
    rows = read_jsonl(out)
    assert len(rows) == 5
    first_line = read_jsonl(DATA)[0]["article"].splitlines()[0]
    assert rows[0]["prediction"] == first_line + "\nso we conclude ."  # one sentence a line
    assert rows[0]["input_tokens"] > 0 and rows[0]["truncated"] is False

    report = json.loads(result.stdout)
    refs = [joined(r["abstract"]) for r in read_jsonl(DATA)]
    direct = direct_scores([(r["prediction"], ref) for r, ref in zip(rows, refs, strict=True)])
    for name in TYPES:
        assert report[name]["mean"] == pytest.approx(sum(direct[name]) / 5 * 100, abs=1e-9)
        assert [r["scores"][name] for r in rows] == [v * 100 for v in direct[name]]

    rescored = invoke(app, "--predictions", out, data, "--format", "json")
    assert json.loads(rescored.stdout) == report


def test_model_path_no_raw_normalises(app, tmp_path, echo, monkeypatch):
    import arxsum.normalize as normalize
    from arxsum.document import ModelText

    monkeypatch.setattr(normalize, "to_model_text", lambda doc: ModelText(text="NORM " + doc.body, math=["m"]))
    monkeypatch.setattr(normalize, "readable", lambda summary, math, cased=None: summary.upper() + " " + math[0])
    result = invoke(app, DATA, "--no-raw", "--limit", "1", "-o", tmp_path / "o.jsonl", "--quiet")

    assert result.exit_code == 0, result.stderr
    assert echo.calls[0][0][0].startswith("NORM additive")
    assert read_jsonl(tmp_path / "o.jsonl")[0]["prediction"].startswith("NORM ADDITIVE")


def test_model_options_are_checked_once(app, echo):
    result = invoke(app, DATA, "--min-length", "-1")
    assert result.exit_code == 2
    assert "min_length" in result.stderr and "Traceback" not in result.stderr


def test_model_path_needs_articles(app, tmp_path, echo):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"abstract": "b"})])
    result = invoke(app, data)
    assert result.exit_code == 1
    assert "d.jsonl:1: no 'article' field" in result.stderr


# --- end to end with a tiny checkpoint -----------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_checkpoint(request, tmp_path_factory) -> Path:
    """conftest's tiny LSG-BART (built once for the whole session), or one of our own without it."""
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from builders import build_tiny_checkpoint

        return Path(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model")))


def test_eval_with_tiny_checkpoint_end_to_end(app, tmp_path, tiny_checkpoint):
    data = Path(shutil.copy(DATA, tmp_path / "test.jsonl"))
    result = invoke(app, data, "--model", tiny_checkpoint, "--device", "cpu", "--dtype", "float32",
                    "--num-beams", "2", "--min-length", "2", "--max-length", "12", "--batch-size", "2")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "ROUGE-Lsum" in result.stderr and "5 examples" in result.stderr
    rows = read_jsonl(tmp_path / "test.predictions.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(isinstance(r["prediction"], str) and r["input_tokens"] > 0 for r in rows)
    refs = [joined(r["abstract"]) for r in read_jsonl(DATA)]
    direct = direct_scores([(r["prediction"], ref) for r, ref in zip(rows, refs, strict=True)])
    for i, row in enumerate(rows):
        assert row["scores"] == {name: direct[name][i] * 100 for name in TYPES}


def test_eval_with_tiny_checkpoint_json_and_limit(app, tmp_path, tiny_checkpoint):
    out = tmp_path / "out.jsonl"
    result = invoke(app, DATA, "--model", tiny_checkpoint, "--device", "cpu", "--num-beams", "1",
                    "--min-length", "2", "--max-length", "8", "--limit", "2", "--max-input-tokens", "64",
                    "--no-raw", "-o", out, "--format", "json", "--quiet")

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["count"] == 2
    assert len(read_jsonl(out)) == 2


def test_missing_model_is_one_line(app, tmp_path):
    result = invoke(app, DATA, "--model", tmp_path / "no-such-model", "--device", "cpu")
    assert result.exit_code == 1
    assert result.stderr.startswith("loading ")
    assert "arxsum: error:" in result.stderr and "Traceback" not in result.stderr
    assert not (FIXTURES / "data.predictions.jsonl").exists()


def test_model_path_reports_each_decoding_step_with_the_time_left():
    from arxsum.commands.eval import _StepLine
    from arxsum.options import GenerationOptions

    said, done = [], []
    steps = _StepLine(said.append, 320)
    examples = evaluate.load_examples(DATA)[:2]
    evaluate.evaluate_model(EchoSummarizer(), examples, GenerationOptions(), on_progress=steps.advanced(done.append),
                            on_step=steps)
    assert done == [1, 1]
    assert said[0] == "summarizing: decoding step 2 of at most 320"  # no step time measured yet
    assert said[1].startswith("summarizing: decoding step 3 of at most 320, ") and said[1].endswith(" s left at most")
    assert said[3] == "summarizing: encoding"  # the next example, until its first step
