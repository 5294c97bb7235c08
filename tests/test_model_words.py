"""The model vocabulary's whole words reach extraction (issue 19): a line-end hyphen the paper does
not decide is decided by the checkpoint's tokenizer, in the worker processes and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arxsum.cli import app
from arxsum.extract import extract
from arxsum.normalize import to_model_text
from arxsum.sources import ExtractOptions, Extractor, Source
from arxsum.tokenizer import load_tokenizer
from arxsum.vocab import model_words


@pytest.fixture(scope="module")
def word_model(tmp_path_factory) -> Path:
    """A tiny checkpoint whose tokenizer holds "nonlinear" as one word (the tests' corpus, and that word)."""
    from tokenizers import ByteLevelBPETokenizer, processors

    from builders import CORPUS, SPECIAL_TOKENS, tiny_config, write_checkpoint

    tok_dir = tmp_path_factory.mktemp("tokenizer")
    tok = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    tok.train_from_iterator([CORPUS] * 4 + ["a nonlinear response is nonlinear . "] * 20, vocab_size=560,
                            min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                                 add_prefix_space=False)
    tok.save(str(tok_dir / "tokenizer.json"))
    tok.save_model(str(tok_dir))
    vocab = len(json.loads((tok_dir / "vocab.json").read_text()))
    model = write_checkpoint(tmp_path_factory.mktemp("word-model"), tiny_config(vocab), tokenizer_from=tok_dir)
    assert "nonlinear" in model_words(model)
    return model


@pytest.fixture(scope="module")
def hyphen_pdf(tmp_path_factory) -> Path:
    from pdf_factory import model_word_hyphen

    return model_word_hyphen(tmp_path_factory.mktemp("pdf") / "circuit.pdf").path


def test_without_the_models_words_the_hyphen_stays(hyphen_pdf):
    assert "non-linear" in extract(hyphen_pdf.read_bytes(), hyphen_pdf.name).body
    assert "nonlinear" in extract(hyphen_pdf.read_bytes(), hyphen_pdf.name, words=frozenset({"nonlinear"})).body


def test_extraction_workers_use_the_checkpoints_words(hyphen_pdf, word_model):
    source = Source(name=str(hyphen_pdf), kind="file", path=hyphen_pdf)
    for timeout in (60, 0):  # a worker process, and in-process
        with Extractor(ExtractOptions(tokenizer_dir=str(word_model)), timeout=timeout, workers=1) as extractor:
            assert "nonlinear" in extractor.submit(source).result().doc.body
    with Extractor(ExtractOptions(), timeout=0, workers=1) as extractor:
        assert "non-linear" in extractor.submit(source).result().doc.body


def test_the_models_words_reach_what_the_cli_feeds_the_model(hyphen_pdf, word_model):
    """The JSON's token count is that of the text with the hyphen decided by the model's vocabulary."""
    tokenizer = load_tokenizer(word_model)
    data = hyphen_pdf.read_bytes()
    joined = len(tokenizer.encode(to_model_text(extract(data, "x.pdf", words=model_words(word_model))).text))
    kept = len(tokenizer.encode(to_model_text(extract(data, "x.pdf")).text))
    assert joined < kept  # "nonlinear" is one token; "non - linear" three or more
    result = CliRunner(env={"COLUMNS": "120"}).invoke(app, [
        str(hyphen_pdf), "--model", str(word_model), "--device", "cpu", "--num-beams", "1", "--max-length", "4",
        "--min-length", "0", "-f", "json", "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["original_tokens"] == joined


def test_arxsum_extract_shows_what_the_model_is_fed(hyphen_pdf, word_model):
    """`arxsum extract --model DIR` decides the hyphen with the model's words, as the summarizing run does."""
    runner = CliRunner(env={"COLUMNS": "120"})
    fed = runner.invoke(app, ["extract", str(hyphen_pdf), "--model", str(word_model)])
    assert fed.exit_code == 0, fed.stderr
    assert "nonlinear" in fed.stdout and "non - linear" not in fed.stdout
    alone = runner.invoke(app, ["extract", str(hyphen_pdf), "--model", str(hyphen_pdf.parent / "no-such-model")])
    assert alone.exit_code == 0 and "non - linear" in alone.stdout
