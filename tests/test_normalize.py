"""Normalisation to the training text (@xmath/@xcite) and the summary back to prose."""

from __future__ import annotations

import pytest

from arxsum.document import Document
from arxsum.latex import to_text
from arxsum.normalize import readable, to_model_text, to_training_text


def norm(text: str) -> str:
    return to_training_text(text)[0]


@pytest.mark.parametrize("citation", [
    "[12]", "[3-5]", "[3, 4, 9]", "[3–5]", "(Smith et al., 2019)", "(Smith and Jones, 2019; Lee, 2020)",
    "(e.g. Komissarov 2001, 2004a,b; Semenov et al. 2004)", "(Blandford & Znajek 1977)", "\\citep{key1,key2}",
    "\\cite[p.~3]{key}", "[Smi19]", "[12, Theorem 3]",
])
def test_citations_become_xcite(citation):
    assert norm(f"as shown before {citation} we go on.") == "as shown before @xcite we go on ."


@pytest.mark.parametrize("text", ["Smith et al. [4] show it.", "Smith et al. (2019) show it.",
                                  "Nathanail & Contopoulos (2014) show it.", "Le and Mikolov (2014) show it."])
def test_textual_citations_become_xcite(text):
    assert norm(text) == "@xcite show it ."


def test_math_is_numbered_in_order_and_kept():
    text, math = to_training_text("Let $x$ be in $$\\mathbb{R}^n$$ and \\(y = 2\\), so Ω($A_φ$) holds.")
    assert text == "let @xmath0 be in @xmath1 and @xmath2 , so @xmath3 holds ."
    assert math == ["x", "\\mathbb{R}^n", "y = 2", "Ω(A_φ)"]


def test_math_without_dollars_from_pdfs():
    text, math = to_training_text("given x ∈ R^n and α + β = 1, the loss τ_t is small.")
    assert text == "given @xmath0 and @xmath1 , the loss @xmath2 is small ."
    assert math == ["x ∈ R^n", "α + β = 1", "τ_t"]


def test_urls_and_emails_go():
    assert norm("Code at https://github.com/a/b. Mail a.b@c.org now.") == "code at . mail now ."


def test_punctuation_and_case_as_in_the_dataset():
    assert norm("A well-known result (see Fig. 3), i.e. 93.68% of “cases”: done!") == \
        'a well - known result ( see fig . 3 ) , i.e. 93.68 % of " cases " : done !'


def test_dataset_text_is_a_fixed_point():
    dataset = "the @xmath3 is shown @xcite . well - known results , see ( fig . 3 ) and @xmath4 ."
    text, math = to_training_text(dataset)
    assert text == dataset and math == [""] * 5
    assert to_training_text(text)[0] == text


def test_new_math_in_dataset_text_numbers_after_the_old():
    text, math = to_training_text("the @xmath3 and $y$ .")
    assert text == "the @xmath3 and @xmath4 ." and math[4] == "y"


def test_ligatures_and_compatibility_characters():
    assert norm("The ﬁrst ﬂow") == "the first flow"


def test_model_text_of_a_document_keeps_math_and_casing():
    doc = Document(source="x", kind="tex", body="We use GAIL on $x$. GAIL works with Kerr holes.")
    mt = to_model_text(doc)
    assert mt.text == "we use gail on @xmath0 . gail works with kerr holes ."
    assert mt.math == ["x"] and mt.cased["gail"] == "GAIL" and mt.cased["kerr"] == "Kerr"


def test_latex_to_text():
    latex = ("\\section{Intro} We \\emph{show} na\\\"ive results~\\cite{a} in Eq.~\\eqref{e}:"
             "\\begin{equation}x=1\\label{e}\\end{equation} and\\footnote{not this} more.")
    assert to_text(latex) == "We show naïve results \\cite{a} in Eq. : $$x=1$$ and more."


# --- the summary back to prose -----------------------------------------------------------------

def test_readable_prose():
    summary = "we study the @xmath0 of kerr black holes @xcite . the well - known result , @xmath5 holds ( see @xcite ) ."
    assert readable(summary, ["A_\\phi"], {"kerr": "Kerr"}) == \
        "We study the $A_\\phi$ of Kerr black holes. The well-known result, [math] holds."


def test_readable_restores_pdf_math_and_attaches_punctuation():
    assert readable("the field @xmath0 , which is ( mostly ) constant .", ["Ω(A_φ)"]) == \
        "The field Ω(A_φ), which is (mostly) constant."


def test_readable_without_math_list():
    assert readable("in this paper , we show that @xmath2 is large . i think so .", []) == \
        "In this paper, we show that [math] is large. I think so."


def test_readable_sentence_case_skips_abbreviations():
    assert readable("we use it , e.g. , for this ( see fig . 2 ) . it works .", []) == \
        "We use it, e.g., for this (see fig. 2). It works."


def test_readable_leaves_pdf_display_formulas_out():
    assert readable("we find @xmath0 .", ["X X − p(w_o|d) (1) log σ(α · v_d^T v_w) + 1 − t"]) == "We find [math]."
