"""Document body <-> the model's training text (@xmath/@xcite), and the summary back to prose."""

from __future__ import annotations

from arxsum.document import Document, ModelText


def to_model_text(doc: Document) -> ModelText:
    """The text the model should see for this document (normalised to the training text)."""
    return ModelText(text=doc.body)


def readable(summary: str, math: list[str]) -> str:
    """The model's dataset-style summary as normal prose."""
    return summary
