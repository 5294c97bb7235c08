"""The project's exceptions, and `describe()`, which says any exception in words.

Raised deep in the library; the CLI turns each into one line on stderr and an exit code. One-line
errors never show an exception's class name: `describe()` turns the ones users meet (files, the
network, the hub, memory) into words.
"""

from __future__ import annotations


class ArxsumError(Exception):
    """Base class for every error a user can cause (bad input, missing model, bad option)."""


class InputError(ArxsumError):
    """An input (file, stdin, arXiv id) cannot be read or holds no usable text."""


class ModelLoadError(ArxsumError):
    """The model directory or hub id cannot be resolved, or its files do not fit the architecture."""


class OptionsError(ArxsumError, ValueError):
    """A generation or runtime option is out of range."""


# Hub and HTTP errors by class name: huggingface_hub, httpx and requests need not be imported to
# recognise them. The first name found in the exception's MRO decides.
_BY_NAME = {
    "OfflineModeIsEnabled": "offline mode is on (HF_HUB_OFFLINE=1)",
    "GatedRepoError": "the model is gated: accept its terms on the hub, then log in (huggingface-cli login)",
    "RepositoryNotFoundError": "no such model on the hub (or it is private)",
    "RevisionNotFoundError": "no such revision of the model on the hub",
    "RemoteEntryNotFoundError": "the model on the hub lacks a file arxsum needs",
    "LocalEntryNotFoundError": "the hub cannot be reached (no network?)",
    "ConnectError": "the server cannot be reached (no network?)",
    "ConnectTimeout": "the server did not answer in time",
    "ReadTimeout": "the server did not answer in time",
    "TimeoutException": "the server did not answer in time",
    "SSLError": "the secure connection failed (certificate or proxy problem)",
    "ConnectionError": "the server cannot be reached (no network?)",
    "TimeoutError": "timed out",
    "MemoryError": "out of memory",
    "RecursionError": "too deeply nested to process",
}


def describe(error: BaseException) -> str:
    """One line in words for any exception, without its class name."""
    names = [cls.__name__ for cls in type(error).__mro__]
    message = " ".join(str(error).split())
    if "HfHubHTTPError" in names and not any(n in _BY_NAME for n in names[:names.index("HfHubHTTPError")]):
        status = getattr(getattr(error, "response", None), "status_code", None)
        return f"the hub answered with an error{f' (HTTP {status})' if status else ''}"
    for name in names:
        if name in _BY_NAME:
            return _BY_NAME[name]
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else ""
        return f"{error.strerror}: {where}" if where else error.strerror
    if isinstance(error, KeyError):
        return f"missing key {message}" if message else "missing key"
    if isinstance(error, IndexError):
        return "index out of range"
    return message or "an unexpected error with no message"
