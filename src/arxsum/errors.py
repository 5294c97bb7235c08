"""The project's exceptions.

Raised deep in the library; the CLI turns each into one line on stderr and an exit code.
"""


class ArxsumError(Exception):
    """Base class for every error a user can cause (bad input, missing model, bad option)."""


class InputError(ArxsumError):
    """An input (file, stdin, arXiv id) cannot be read or holds no usable text."""


class ModelLoadError(ArxsumError):
    """The model directory or hub id cannot be resolved, or its files do not fit the architecture."""


class OptionsError(ArxsumError, ValueError):
    """A generation or runtime option is out of range."""
