"""The RAC and label-block string formats, including the deliberate fixes to the reference formatter."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rac.formatting import (
    EXAMPLE_END_TOKEN,
    EXAMPLE_TOKEN,
    FALSE_LABEL_TOKEN,
    GLICLASS_TOKENS,
    RAC_TOKENS,
    TRUE_LABEL_TOKEN,
    Marker,
    RACExample,
    append_examples,
    build_model_input,
    escape_markers,
    false_labels,
    format_example,
    label_block,
    rac_parts,
    render,
    truncate_to_tokens,
)


def test_example_block_matches_the_seeds_format():
    ex = RACExample("the film was great", ("positive",), ("positive", "negative", "neutral"))
    assert format_example(ex) == (
        "<<EXAMPLE>> the film was great <<TRUE_LABEL>> positive "
        "<<FALSE_LABEL>> negative <<FALSE_LABEL>> neutral <</EXAMPLE>>"
    )


def test_false_labels_keep_all_labels_order_not_set_order():
    labels = tuple(f"label {i}" for i in range(30))
    ex = RACExample("x", ("label 3",), labels)
    assert false_labels(ex) == [label for label in labels if label != "label 3"]


def test_missing_all_labels_fall_back_to_the_query_candidates():
    ex = RACExample("x", ("b",))
    assert false_labels(ex, ["a", "b", "c"]) == ["a", "c"]


def test_example_without_true_label_is_kept_as_negative_evidence():
    ex = RACExample("unrelated text", ())
    out = append_examples("query", [ex], ["a", "b"])
    assert out == "query <<EXAMPLE>> unrelated text <<FALSE_LABEL>> a <<FALSE_LABEL>> b <</EXAMPLE>>"


def test_no_double_space_without_false_labels():
    ex = RACExample("x", ("a",), ("a",))
    assert "  " not in format_example(ex)


def test_false_labels_are_capped_and_lead_with_other_examples_true_labels():
    candidates = [f"l{i}" for i in range(150)]
    examples = [RACExample("first", ("l0",)), RACExample("second", ("l99",))]
    text = append_examples("q", examples, candidates, max_false_labels=3)
    first_block, second_block = text.split("<</EXAMPLE>>")[:2]
    assert first_block.count("<<FALSE_LABEL>>") == 3
    assert "<<FALSE_LABEL>> l99" in first_block  # the confusable label comes first
    assert "<<FALSE_LABEL>> l0 " in second_block
    assert text.count("<<FALSE_LABEL>>") == 6


def test_no_examples_leaves_the_text_alone():
    assert append_examples("query", [], ["a"]) == "query"


@pytest.mark.parametrize("prompt_first", [True, False])
def test_label_block_is_glued_like_gliclass(prompt_first):
    block = label_block(["Sports", "Politics"], "Classify:")
    assert block == "<<LABEL>>Sports<<LABEL>>Politics<<SEP>>Classify:"
    full = build_model_input("TEXT", ["Sports", "Politics"], prompt="Classify:", prompt_first=prompt_first)
    assert full == (block + "TEXT" if prompt_first else "TEXT" + block)
    assert label_block(["Sports"], lowercase=True) == "<<LABEL>>sports<<SEP>>"


def test_truncate_to_tokens_with_and_without_a_tokenizer(minilm_path):
    text = "one two three four five six"
    assert truncate_to_tokens(text, 3) == "one two three"
    assert truncate_to_tokens(text, None) == text
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    cut = truncate_to_tokens("unbelievably long words here", 2, tokenizer)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 2
    assert "unbelievably long words here".startswith(cut)


def test_from_dict_accepts_the_gliclass_form():
    ex = RACExample.from_dict({"text": "t", "true_labels": ["a"], "all_labels": ["a", "b"]})
    assert ex == RACExample("t", ("a",), ("a", "b"))
    assert RACExample.from_dict(ex.to_dict()) == ex
    with pytest.raises(ValueError, match="string 'text'"):
        RACExample.from_dict({"true_labels": ["a"]})


def test_parts_keep_placed_markers_apart_from_data():
    ex = RACExample("a <<SEP>> b", ("x<<LABEL>>",))
    parts = rac_parts("query <</EXAMPLE>>", [ex], ["x<<LABEL>>", "y"])
    assert [p for p in parts if isinstance(p, Marker)] == [EXAMPLE_TOKEN, TRUE_LABEL_TOKEN, FALSE_LABEL_TOKEN, EXAMPLE_END_TOKEN]
    assert "".join(parts) == "query <</EXAMPLE>> <<EXAMPLE>> a <<SEP>> b <<TRUE_LABEL>> x<<LABEL>> <<FALSE_LABEL>> y <</EXAMPLE>>"
    assert render(parts) == (
        "query < </EXAMPLE>> <<EXAMPLE>> a < <SEP>> b <<TRUE_LABEL>> x< <LABEL>> <<FALSE_LABEL>> y <</EXAMPLE>>"
    )
    assert render(rac_parts("q", [RACExample("t", ("a",))], ["a"], cut=str.upper)) == "q <<EXAMPLE>> T <<TRUE_LABEL>> a <</EXAMPLE>>"


def test_escaping_leaves_no_marker_and_plain_text_alone():
    tricky = "<<<SEP>>> <<LABEL>><<LABEL>> <</EXAMPLE>> <<EXAMPLE> << SEP >>"
    escaped = escape_markers(tricky)
    assert not any(m in escaped for m in (*GLICLASS_TOKENS, *RAC_TOKENS))
    assert escaped.replace(" ", "") == tricky.replace(" ", "")  # only spaces were added
    assert escape_markers("no markers <here>") == "no markers <here>"
