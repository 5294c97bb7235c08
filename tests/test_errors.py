"""Errors in words: no one-line error shows an exception's class name."""

from __future__ import annotations

import re

import pytest

from arxsum.errors import ModelLoadError, describe

CLASS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception|Found|Enabled)\b")


def test_common_exceptions_are_described_in_words(tmp_path):
    try:
        open(tmp_path / "missing.pdf")
    except OSError as e:
        assert describe(e) == f"No such file or directory: {tmp_path / 'missing.pdf'}"
    assert describe(UnicodeDecodeError("utf-8", b"a\xff", 1, 2, "invalid start byte")) == "not UTF-8 text (byte 1)"
    assert describe(KeyError("title")) == "missing key 'title'"
    assert describe(MemoryError()) == "out of memory"
    assert describe(ConnectionRefusedError()) == "the server cannot be reached (no network?)"
    assert describe(RuntimeError("")) == "an unexpected error with no message"


def test_hub_errors_by_name_without_importing_the_hub():
    LocalEntryNotFoundError = type("LocalEntryNotFoundError", (FileNotFoundError,), {})
    GatedRepoError = type("GatedRepoError", (type("RepositoryNotFoundError", (OSError,), {}),), {})
    assert describe(LocalEntryNotFoundError("An error happened ...")) == "the hub cannot be reached (no network?)"
    assert "gated" in describe(GatedRepoError("401 Client Error"))


def test_the_offline_hub_error_says_it_in_words(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from arxsum.hub import resolve

    with pytest.raises(ModelLoadError) as err:
        resolve("nobody-here/no-such-model-xyz")
    message = str(err.value)
    assert "cannot get model 'nobody-here/no-such-model-xyz'" in message and "--model DIR" in message
    assert not CLASS_NAME.search(message), message
