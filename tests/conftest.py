"""Shared fixtures: a tiny real checkpoint, and a fake summarizer for runner tests that need no model."""

from __future__ import annotations

import os

import pytest

from arxsum.summarizer import Summary


def pytest_configure(config):
    # Every CPU phase on the kernels, not on what a timing on this (busy) machine chose, so that the
    # suite runs the same code every time; cpuplan's measuring has tests of its own
    # (test_cpuplan.py). A value set outside (ARXSUM_CPU_PLAN=measure make test) is kept.
    os.environ.setdefault("ARXSUM_CPU_PLAN", "kernels")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random LSG-BART in the hub's file layout (config.json, weights, tokenizer files)."""
    from builders import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


class FakeSummarizer:
    """The Summarizer contract without a model: a token is a word; the summary is the first 3 words.

    `calls` records each batch's size, so tests can watch batching and the OOM back-off.
    """

    name = "fake-model"
    device = "cpu"
    max_positions = 64
    decoder_positions = 512

    def __init__(self) -> None:
        self.calls: list[int] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def summarize_batch(self, texts, options=None, max_input_tokens=None):
        self.calls.append(len(texts))
        limit = max_input_tokens or self.max_positions
        out = []
        for text in texts:
            n = self.count_tokens(text)
            out.append(Summary(" " + " ".join(text.split()[:3]), [2, 0, 2], min(n, limit), n, n > limit))
        return out


@pytest.fixture
def fake_summarizer() -> FakeSummarizer:
    return FakeSummarizer()
