"""ROUGE evaluation: the card's measurement (ROUGE-1/2/L/Lsum with stemming) on a JSONL dataset.

Data flows one way: DATA (+ PRED) -> examples -> predictions -> per-pair scores -> report.

Scores are rouge-score's own F-measures, computed on the strings exactly as they are scored and
written (`RougeScorer(..., use_stemmer=True).score(reference, prediction)`), times 100. ROUGE-Lsum
splits both sides on their newlines, so sentences must be one per line. rouge-score's optional
nltk sentence splitting needs punkt data that cannot always be downloaded, so we never use it:
model outputs are put one sentence per line by `split_sentences` (a regex, close to nltk's
punkt on arXiv text), and `split=True` re-splits both sides the same way, as Hugging Face's
summarization example does with nltk. Without `split`, predictions given by the user and
all references are scored as given, so the figures equal rouge-score's on the same strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from arxsum.errors import InputError

if TYPE_CHECKING:
    from arxsum.decoding import GenerationOptions
    from arxsum.summarizer import Summarizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

Scores = dict[str, float]  # ROUGE type -> F-measure in percent


@dataclass(frozen=True)
class Example:
    """One DATA record: where it came from, the article and the reference abstract."""

    index: int  # 0-based position among DATA's records
    line: int  # 1-based line number in DATA
    article: str | None  # None when the article was not asked for (scoring given predictions)
    reference: str


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap confidence interval, all in percent."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Report:
    scores: dict[str, Interval]  # ROUGE type -> interval, in ROUGE_TYPES order
    count: int

    def to_json(self) -> dict[str, Any]:
        """`{"rouge1": {"mean", "low", "high"}, ..., "count": n}` (F-measures in percent)."""
        out: dict[str, Any] = {
            name: {"mean": iv.mean, "low": iv.low, "high": iv.high} for name, iv in self.scores.items()
        }
        out["count"] = self.count
        return out


# --- reading -------------------------------------------------------------------------------------

def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; InputError naming the line otherwise."""
    try:
        stream = open(path, "rb")  # decoded line by line, so that a bad byte names its line
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream:
        for line_no, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}:{line_no}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            yield line_no, record


def _text_field(record: dict[str, Any], field: str, where: str) -> str:
    """A field that is a string, or a list of strings (sentences) joined with newlines."""
    if field not in record:
        raise InputError(f"{where}: no {field!r} field (fields: {', '.join(sorted(record)) or 'none'})")
    value = record[field]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    raise InputError(f"{where}: {field!r} must be a string or a list of strings")


def load_examples(path: Path, *, article_field: str | None = "article",
                  abstract_field: str | None = None, limit: int | None = None) -> list[Example]:
    """DATA's records in order (the first `limit` of them). `article_field=None` skips the article.

    `abstract_field=None` reads "abstract", or "reference" in a record without one (as in the
    per-example files `write_example` writes, so that they serve as DATA too).

    A list of sentences becomes one string with a sentence per line: for the reference this is
    what ROUGE-Lsum needs; for the article it is the `scientific_papers` training text's layout.
    """
    examples: list[Example] = []
    for line_no, record in _read_jsonl(path):
        if limit is not None and len(examples) >= limit:
            break
        where = f"{path}:{line_no}"
        article = None
        if article_field is not None:
            article = _text_field(record, article_field, where)
            if not article.strip():
                raise InputError(f"{where}: {article_field!r} is empty")
        if abstract_field is None:
            field = "reference" if "abstract" not in record and "reference" in record else "abstract"
        else:
            field = abstract_field
        reference = _text_field(record, field, where)
        examples.append(Example(index=len(examples), line=line_no, article=article, reference=reference))
    if not examples:
        raise InputError(f"{path}: no records")
    return examples


def load_predictions(path: Path, *, field: str = "prediction", limit: int | None = None) -> list[str]:
    """PRED's predictions in order (the first `limit` of them)."""
    predictions: list[str] = []
    for line_no, record in _read_jsonl(path):
        if limit is not None and len(predictions) >= limit:
            break
        predictions.append(_text_field(record, field, f"{path}:{line_no}"))
    return predictions


def check_counts(examples: Sequence[Example], predictions: Sequence[str], *, data: Path, pred: Path) -> None:
    """PRED must hold one prediction per DATA record used (the first `limit`, under a limit)."""
    have, want = len(predictions), len(examples)
    if have < want:
        raise InputError(f"{pred} has {have} predictions for {want} records of {data}:"
                         f" record {have + 1} ({data}:{examples[have].line}) has none")
    if have > want:
        raise InputError(f"{pred} has {have} predictions for {want} records of {data}:"
                         f" prediction {want + 1} has no record")


# --- sentences -----------------------------------------------------------------------------------

# A sentence ends at . ! or ? (and any closing quotes or brackets) followed by white space.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
# Words whose final period does not end a sentence (nltk's punkt learns these; we list them).
_ABBREVIATIONS = frozenset(
    "e.g. i.e. al. cf. vs. fig. figs. eq. eqs. ref. refs. sec. secs. tab. app. ch. no. vol. pp."
    " resp. approx. dr. prof. mr. mrs. ms. st. jr.".split()
)


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped: each line split after . ! ? followed by white space.

    Existing line breaks are kept as boundaries. A period after a listed abbreviation ("e.g.",
    "et al.", "fig.", "eq.", ...) is not a boundary. Unlike nltk's punkt, nothing is learnt:
    unlisted abbreviations split, and lowercase arXiv-dataset text splits like any other.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _SENTENCE_END.finditer(line):
            words = line[start:match.end()].split()
            if words and words[-1].lower().lstrip("([").rstrip("\"')]") in _ABBREVIATIONS:
                continue
            sentences.append(line[start:match.end()].strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def one_sentence_per_line(text: str) -> str:
    """`text` with a sentence per line, as ROUGE-Lsum needs; idempotent."""
    return "\n".join(split_sentences(text))


# --- scoring -------------------------------------------------------------------------------------

def make_scorer():
    """rouge-score's scorer with the card's settings: the four types, Porter stemming, no nltk."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, split_summaries=False)


def score_pair(scorer, prediction: str, reference: str) -> Scores:
    """rouge-score's F-measures for one pair, in percent."""
    result = scorer.score(reference, prediction)  # rouge-score takes (target, prediction)
    return {name: result[name].fmeasure * 100 for name in ROUGE_TYPES}


def bootstrap_intervals(per_pair: Sequence[Scores], *, resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> dict[str, Interval]:
    """Plain mean of each ROUGE type, with a percentile bootstrap interval of that mean.

    The same `resamples` draws of n pairs (with replacement, fixed seed) serve every type, so
    the figures are reproducible. For one pair the interval is the value itself.
    """
    import numpy as np

    if not per_pair:
        raise InputError("nothing to score: no examples")
    values = np.array([[pair[name] for pair in per_pair] for name in ROUGE_TYPES])  # (types, n)
    n = values.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((len(ROUGE_TYPES), resamples))  # (types, resamples)
    chunk = max(1, 2_000_000 // n)  # bound the (types, chunk, n) gather to ~64 MB
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        draws = rng.integers(0, n, size=(stop - start, n))  # (chunk, n)
        means[:, start:stop] = values[:, draws].mean(axis=2)
    tail = (1 - confidence) / 2 * 100
    lows, highs = np.percentile(means, [tail, 100 - tail], axis=1)  # (types,) each
    return {
        name: Interval(
            mean=math.fsum(values[i].tolist()) / n,  # the plain mean, not the bootstrap's
            low=float(lows[i]),
            high=float(highs[i]),
        )
        for i, name in enumerate(ROUGE_TYPES)
    }


# --- predictions from the model ------------------------------------------------------------------

@dataclass(frozen=True)
class Generated:
    text: str  # the summary as scored: readable (unless raw), one sentence per line
    input_tokens: int
    truncated: bool


def generate(summarizer: Summarizer, articles: Sequence[str], options: GenerationOptions, *,
             batch_size: int = 1, max_input_tokens: int | None = None, raw: bool = True,
             on_step: Callable[[int], None] | None = None) -> Iterator[list[Generated]]:
    """Summaries of `articles` in order, one list per batch of `batch_size`.

    `raw=False` passes each article through `normalize.to_model_text` first and the summary
    through `normalize.readable` after; `raw=True` (for datasets already in the training
    text's form, such as `scientific_papers`) feeds the article as it is.
    """
    from arxsum.document import Document
    from arxsum.normalize import readable, to_model_text

    if batch_size < 1:
        from arxsum.errors import OptionsError

        raise OptionsError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(articles), batch_size):
        batch = articles[start:start + batch_size]
        if raw:
            texts = list(batch)
        else:
            model_texts = [to_model_text(Document(source=f"#{start + i}", kind="text", body=article))
                           for i, article in enumerate(batch)]
            texts = [m.text for m in model_texts]
        summaries = summarizer.summarize_batch(texts, options, max_input_tokens=max_input_tokens, on_step=on_step)
        yield [
            Generated(
                text=one_sentence_per_line(
                    s.text if raw else readable(s.text, model_texts[i].math, model_texts[i].cased)),
                input_tokens=s.input_tokens,
                truncated=s.truncated,
            )
            for i, s in enumerate(summaries)
        ]


# --- one path for both modes ---------------------------------------------------------------------

def write_example(stream: TextIO, example: Example, prediction: str, scores: Scores,
                  extra: dict[str, Any] | None = None) -> None:
    """One per-example JSONL line: where it came from, the strings as scored, F-measures in percent.

    The `prediction` field makes the file a valid PRED for `evaluate_predictions`.
    """
    record: dict[str, Any] = {"index": example.index, "line": example.line,
                              "prediction": prediction, "reference": example.reference}
    record.update(extra or {})
    record["scores"] = scores
    stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    stream.flush()


def _scored(example: Example, prediction: str, *, scorer, split: bool) -> tuple[Example, str, Scores]:
    if split:
        prediction = one_sentence_per_line(prediction)
        example = dataclasses.replace(example, reference=one_sentence_per_line(example.reference))
    return example, prediction, score_pair(scorer, prediction, example.reference)


def evaluate_predictions(examples: Sequence[Example], predictions: Sequence[str], *, split: bool = False,
                         output: TextIO | None = None,
                         on_progress: Callable[[int], None] | None = None) -> Report:
    """Score given predictions against DATA's references, pair by pair in order."""
    if len(examples) != len(predictions):
        raise InputError(f"{len(predictions)} predictions for {len(examples)} examples")
    scorer = make_scorer()
    per_pair: list[Scores] = []
    for example, prediction in zip(examples, predictions, strict=True):
        example, prediction, scores = _scored(example, prediction, scorer=scorer, split=split)
        per_pair.append(scores)
        if output is not None:
            write_example(output, example, prediction, scores)
        if on_progress is not None:
            on_progress(1)
    return Report(scores=bootstrap_intervals(per_pair), count=len(per_pair))


def evaluate_model(summarizer: Summarizer, examples: Sequence[Example], options: GenerationOptions, *,
                   batch_size: int = 1, max_input_tokens: int | None = None, raw: bool = True,
                   split: bool = False, output: TextIO | None = None,
                   on_progress: Callable[[int], None] | None = None,
                   on_step: Callable[[int], None] | None = None) -> Report:
    """Summarize each example's article, then score it as `evaluate_predictions` does.

    Per-example lines are written as each batch finishes, so a long run leaves its work behind.
    on_progress(n): n more examples done; on_step(length): a decoding step of the current batch done.
    """
    articles = []
    for example in examples:
        if example.article is None:
            raise InputError(f"line {example.line}: no article to summarize")
        articles.append(example.article)
    scorer = make_scorer()
    per_pair: list[Scores] = []
    pending = iter(examples)
    for batch in generate(summarizer, articles, options, batch_size=batch_size,
                          max_input_tokens=max_input_tokens, raw=raw, on_step=on_step):
        for generated in batch:
            example, prediction, scores = _scored(next(pending), generated.text, scorer=scorer, split=split)
            per_pair.append(scores)
            if output is not None:
                write_example(output, example, prediction, scores,
                              {"input_tokens": generated.input_tokens, "truncated": generated.truncated})
        if on_progress is not None:
            on_progress(len(batch))
    return Report(scores=bootstrap_intervals(per_pair), count=len(per_pair))
