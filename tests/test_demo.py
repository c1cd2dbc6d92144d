"""The built-in demo generator: deterministic, well-formed pages, canonical labels, correct sums."""

from collections import Counter

import pytest

from receipt_layoutlm.sources.demo import generate_receipts

CANONICAL = {
    "MERCHANT_NAME",
    "STORE_HOURS",
    "PHONE_NUMBER",
    "WEBSITE",
    "LOYALTY_ID",
    "ADDRESS_LINE",
    "DATE",
    "TIME",
    "PAYMENT_METHOD",
    "COUPON",
    "DISCOUNT",
    "PRODUCT_NAME",
    "QUANTITY",
    "UNIT_PRICE",
    "LINE_TOTAL",
    "SUBTOTAL",
    "TAX",
    "TIP",
    "GRAND_TOTAL",
    "CHANGE",
    "CASH_BACK",
    "REFUND",
    "O",
}


@pytest.fixture(scope="module")
def receipts():
    return generate_receipts(50, seed=7)


def cents(text: str) -> int:
    """'$12.34', '-2.00' -> 1234, 200 (the sign is implied by the label)."""
    whole, frac = text.replace("$", "").replace("-", "").split(".")
    return int(whole) * 100 + int(frac)


def amounts(receipt, label: str) -> list[int]:
    return [cents(w.text) for w in receipt.words if w.label == label]


def test_deterministic_for_a_seed():
    assert generate_receipts(10, seed=3) == generate_receipts(10, seed=3)
    assert generate_receipts(10, seed=3) != generate_receipts(10, seed=4)


def test_smaller_n_is_a_prefix():
    small, big = generate_receipts(20), generate_receipts(60)
    assert big[:20] == small
    ids = [r.id for r in big]
    assert ids[0] == "demo-00001" and len(set(ids)) == len(ids)


def test_boxes_inside_page_and_lines_in_order(receipts):
    for r in receipts:
        assert r.words and 500 <= r.width <= 640 and r.height > 0
        for w in r.words:
            x0, y0, x1, y1 = w.box
            assert 0 <= x0 <= x1 <= r.width, (r.id, w)
            assert 0 <= y0 <= y1 <= r.height, (r.id, w)
            assert w.text and not any(ch.isspace() for ch in w.text), (r.id, w)
        lines = [w.line for w in r.words]
        assert lines == sorted(lines) and lines[0] == 0
        assert set(lines) == set(range(lines[-1] + 1))  # every line id used, no gaps
        for line in set(lines):  # left to right within a line, lines top to bottom
            xs = [w.box[0] for w in r.words if w.line == line]
            assert xs == sorted(xs), (r.id, line)
        tops = [min(w.box[1] for w in r.words if w.line == line) for line in sorted(set(lines))]
        assert tops == sorted(tops), r.id


def test_labels_canonical_and_common_ones_present(receipts):
    seen = Counter()
    for r in receipts:
        labels = {w.label for w in r.words}
        assert labels <= CANONICAL, labels - CANONICAL
        seen.update(labels)
    for label in [
        "MERCHANT_NAME",
        "ADDRESS_LINE",
        "PHONE_NUMBER",
        "DATE",
        "TIME",
        "PRODUCT_NAME",
        "LINE_TOTAL",
        "SUBTOTAL",
        "TAX",
        "GRAND_TOTAL",
    ]:
        assert seen[label] >= 40, (label, seen[label])
    assert seen["PAYMENT_METHOD"] >= 40 and seen["QUANTITY"] > 0 and seen["UNIT_PRICE"] > 0


def test_arithmetic_adds_up(receipts):
    for r in receipts:
        (subtotal,), (tax,), (grand,) = amounts(r, "SUBTOTAL"), amounts(r, "TAX"), amounts(r, "GRAND_TOTAL")
        assert sum(amounts(r, "LINE_TOTAL")) == subtotal, r.id
        expected = subtotal + tax + sum(amounts(r, "TIP")) - sum(amounts(r, "DISCOUNT"))
        assert abs(grand - expected) <= 1, r.id  # within one cent


def test_line_total_is_quantity_times_unit_price(receipts):
    checked = 0
    for r in receipts:
        for line in sorted({w.line for w in r.words}):
            words = [w for w in r.words if w.line == line]
            qty = [int(w.text) for w in words if w.label == "QUANTITY"]
            if qty:
                unit = [cents(w.text) for w in words if w.label == "UNIT_PRICE"]
                total = [cents(w.text) for w in words if w.label == "LINE_TOTAL"]
                assert total == [qty[0] * unit[0]], (r.id, line)
                checked += 1
    assert checked > 0
