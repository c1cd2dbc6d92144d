"""The recipe functions on hand-made cases (shared/spec/training-recipe.md)."""

import pytest

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.labels import final_label, normalise_label, resolve_allowed_labels
from receipt_layoutlm.sources import Receipt, Word
from receipt_layoutlm.training.data import prepare_data
from receipt_layoutlm.training.recipe import (
    bio_tags,
    build_label_list,
    normalize_box,
    split_ids,
    tag_receipts,
    thin_o_lines,
)


def receipt(rid, rows):
    """rows: list of lines, each a list of (text, label)."""
    words = [
        Word(text, (10 * k, 10 * i, 10 * k + 8, 10 * i + 8), i, label)
        for i, row in enumerate(rows)
        for k, (text, label) in enumerate(row)
    ]
    return Receipt(rid, 100, 100, words)


def test_bio_continues_only_within_a_line():
    labels = ["MERCHANT_NAME", "MERCHANT_NAME", "MERCHANT_NAME", "O", "DATE", "TIME", "TIME"]
    lines = [0, 0, 1, 1, 2, 2, 2]
    assert bio_tags(labels, lines) == [
        "B-MERCHANT_NAME",
        "I-MERCHANT_NAME",
        "B-MERCHANT_NAME",
        "O",
        "B-DATE",
        "B-TIME",
        "I-TIME",
    ]


def test_merge_amounts_keeps_unit_price_and_whitelist_blanks_the_rest():
    allowed = resolve_allowed_labels(["DATE", "AMOUNT"], merge_amounts=True)
    assert final_label("LINE_TOTAL", True, allowed) == "AMOUNT"
    assert final_label("GRAND_TOTAL", True, allowed) == "AMOUNT"
    assert final_label("TAX", True, None) == "AMOUNT"
    assert final_label("UNIT_PRICE", True, None) == "UNIT_PRICE"
    assert final_label("UNIT_PRICE", True, allowed) == "O"
    assert final_label("TAX", False, None) == "TAX"
    assert final_label("date", True, allowed) == "DATE"


def test_aliases_normalise():
    assert normalise_label("ADDRESS") == "ADDRESS_LINE"
    assert normalise_label("business_name") == "MERCHANT_NAME"
    assert normalise_label("PAYMENT_TYPE") == "PAYMENT_METHOD"
    assert normalise_label("O") == "O"


def test_unknown_allowed_label_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        resolve_allowed_labels(["MERCHANT", "DATE"], merge_amounts=True)
    assert "MERCHANT" in str(e.value) and "MERCHANT_NAME" in str(e.value) and "AMOUNT" in str(e.value)


def test_unknown_label_in_data_is_an_error():
    with pytest.raises(UserError, match="FOO_BAR"):
        tag_receipts([receipt("a", [[("x", "FOO_BAR")]])], False, None)


def test_boxes_scale_round_clamp_and_order():
    assert normalize_box((50, 25, 100, 50), 200, 100) == [250, 250, 500, 500]
    assert normalize_box((0.5, 0, 1.0004, 1), 1, 1) == [500, 0, 1000, 1000]
    assert normalize_box((-3, 120, 10, 90), 100, 100) == [0, 900, 100, 1000]


def test_label_list_comes_from_the_whole_dataset():
    # TIME appears in one receipt only; whichever split it lands in, it is in the label list.
    receipts = [receipt(f"r{i}", [[("shop", "MERCHANT_NAME")], [("x", "O")]]) for i in range(9)]
    receipts.append(receipt("only-time", [[("10:00", "TIME")], [("y", "O")]]))
    data = prepare_data(receipts, type("R", (), {"source": "t", "dropped": {}})(), val_ratio=0.5, seed=1)
    assert data.label_list == ["O", "B-MERCHANT_NAME", "I-MERCHANT_NAME", "B-TIME", "I-TIME"]


def test_no_entity_left_is_an_error():
    tagged, _ = tag_receipts([receipt("a", [[("1.00", "TAX")]])], True, resolve_allowed_labels(["DATE"], True))
    with pytest.raises(UserError, match="No entity label is left"):
        build_label_list(tagged)


def test_split_is_seeded_order_free_and_stable_as_data_grows():
    ids = [f"receipt-{i}" for i in range(200)]
    train, val = split_ids(ids, 0.1, seed=42)
    assert set(split_ids(list(reversed(ids)), 0.1, seed=42)[1]) == set(val)
    assert set(train) | set(val) == set(ids) and not set(train) & set(val)
    assert 8 <= len(val) <= 35
    grown_train, grown_val = split_ids(ids + [f"new-{i}" for i in range(50)], 0.1, seed=42)
    assert set(val) <= set(grown_val) and set(train) <= set(grown_train)
    assert set(split_ids(ids, 0.1, seed=7)[1]) != set(val)


def test_split_keeps_one_receipt_on_each_side():
    train, val = split_ids(["a", "b"], 0.01, seed=3)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(UserError):
        split_ids(["only"], 0.1, seed=3)


def test_thinning_counts_and_seeded_rule():
    # Each receipt: one entity line with 2 entity words + 1 O word, and 4 all-O lines of 3 words.
    rows = [[("Shop", "MERCHANT_NAME"), ("Inc", "MERCHANT_NAME"), ("#12", "O")]] + [[("a", "O")] * 3] * 4
    tagged, _ = tag_receipts([receipt(f"r{i}", rows) for i in range(50)], False, None)
    stats = thin_o_lines(tagged, 1.0, seed=42)
    # E counts entity words only (100); O counts words of all-O lines only (50 * 4 * 3 = 600).
    assert stats["entity_words"] == 100 and stats["o_words_before"] == 600
    assert stats["keep_probability"] == pytest.approx(100 / 600)
    assert stats["ratio_before"] == pytest.approx(6.0)
    assert stats["words_dropped"] == 3 * stats["lines_dropped"]
    assert stats["o_words_after"] == 600 - stats["words_dropped"]
    assert 120 < stats["lines_dropped"] < 195  # ~5/6 of 200 lines
    # Entity lines are never touched; the same seed drops the same lines.
    assert all(not ({0, 1, 2} & r.unsupervised) for r in tagged)
    again, _ = tag_receipts([receipt(f"r{i}", rows) for i in range(50)], False, None)
    thin_o_lines(again, 1.0, seed=42)
    assert [r.unsupervised for r in again] == [r.unsupervised for r in tagged]
    untouched, _ = tag_receipts([receipt(f"r{i}", rows) for i in range(50)], False, None)
    assert thin_o_lines(untouched, 10.0, seed=42)["lines_dropped"] == 0


def test_validation_is_never_thinned():
    rows = [[("Shop", "MERCHANT_NAME")]] + [[("a", "O"), ("b", "O")]] * 6
    receipts = [receipt(f"r{i}", rows) for i in range(40)]
    report = type("R", (), {"source": "t", "dropped": {}})()
    data = prepare_data(receipts, report, o_entity_ratio=0.5, val_ratio=0.25, seed=5)
    assert data.thinning["lines_dropped"] > 0
    assert all(not r.unsupervised for r in data.val)
    assert any(r.unsupervised for r in data.train)
