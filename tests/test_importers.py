"""Readers for the public datasets (SROIE, CORD, FUNSD) on small hand-written files in their
formats, and `dataset convert` writing them as our JSONL."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from receipt_layoutlm.cli import cli
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.sources.jsonl import read_jsonl

FIXTURES = Path(__file__).parent / "fixtures"


def labelled(receipt) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for w in receipt.words:
        if w.label != "O":
            out.setdefault(w.label, []).append(w.text)
    return out


def test_sroie_lines_words_and_key_matching():
    receipts, report = load_receipts(f"sroie:{FIXTURES / 'sroie'}")
    book, sanyu = receipts
    assert book.id == "X51005200931" and book.extra == {"source": "sroie"}
    # No images: the page is the largest box extent.
    assert (book.width, book.height) == (444, 608)
    # Words cut from the line box by character offsets: "TAN WOON YANN" over x 72..326.
    tan, woon = book.words[0], book.words[1]
    per_char = (326 - 72) / len("TAN WOON YANN")
    assert tan.box == pytest.approx((72, 25, 72 + 3 * per_char, 64))
    assert woon.box == pytest.approx((72 + 4 * per_char, 25, 72 + 8 * per_char, 64))
    assert {w.line for w in book.words[:3]} == {0}
    # A text holding commas stays whole.
    assert [w.text for w in book.words if w.line == 3] == ["NO.53", "55,57", "&", "59,", "JALAN", "SAGU", "18,"]

    found = labelled(book)
    # Fuzzy: the OCR's "BND" and missing space still match "BHD"; the owner's name above does not.
    assert found["MERCHANT_NAME"] == ["BOOK", "TA", ".K(TAMAN", "DAYA)", "SDN", "BND"]
    assert " ".join(found["ADDRESS_LINE"]) == "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU, JOHOR."
    assert found["DATE"] == ["25/12/2018"]
    # Exact: 9.00 appears three times; only the one right after the TOTAL line is the total.
    totals = [w for w in book.words if w.label == "GRAND_TOTAL"]
    assert [(w.text, w.line) for w in totals] == [("9.00", 14)]

    # .csv files too; "RM 7.64" -> the word 7.64; an address that is not on the receipt is counted.
    assert labelled(sanyu) == {
        "MERCHANT_NAME": ["SANYU", "STATIONERY", "SHOP"],
        "DATE": ["30/01/2018"],
        "GRAND_TOTAL": ["7.64"],
    }
    assert report.dropped == {"sroie address value not found in the OCR lines": 1}


def test_sroie_errors(tmp_path):
    with pytest.raises(UserError, match="no box/ folder"):
        load_receipts(f"sroie:{tmp_path}")
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "a.txt").write_text("1,2,3,TOTAL\n")
    with pytest.raises(UserError, match=r"a\.txt:1: expected 8 corner coordinates"):
        load_receipts(f"sroie:{tmp_path}")


def test_cord_categories_become_our_labels():
    receipts, report = load_receipts(f"cord:{FIXTURES / 'cord'}")
    dev, train = receipts
    assert dev.id == "dev/receipt_00000" and train.id == "train/receipt_00000"
    assert (train.width, train.height) == (864, 1296)
    assert labelled(train) == {
        "QUANTITY": ["2"],
        "PRODUCT_NAME": ["ICE", "LEMON", "TEA"],
        "LINE_TOTAL": ["30,000"],
        "UNIT_PRICE": ["@15,000"],
        "SUBTOTAL": ["30,000"],
        "TAX": ["3,000"],
        "GRAND_TOTAL": ["33,000"],
        "PAYMENT_METHOD": ["CASH"],
        "CHANGE": ["17,000"],
    }
    # Key words ("TOTAL") are O; one valid_line is one line; lines in reading order.
    total_line = [w for w in train.words if w.line == 6]
    assert [(w.text, w.label) for w in total_line] == [("TOTAL", "O"), ("33,000", "GRAND_TOTAL")]
    assert [w.text for w in train.words][:4] == ["2", "ICE", "LEMON", "TEA"]
    # A box 2 px past the image edge is cut to the page and counted; an empty word is skipped.
    assert max(w.box[2] for w in dev.words) == 610
    assert report.dropped == {"cord word with empty text": 1, "box cut to the page": 1}


def test_funsd_keeps_the_form_labels():
    from receipt_layoutlm.training.recipe import build_label_list, tag_receipts

    receipts, report = load_receipts(f"funsd:{FIXTURES / 'funsd'}")
    form = receipts[0]
    assert form.id == "training_data/0000971160"
    assert [(w.text, w.label) for w in form.words[:6]] == [
        ("R&D", "O"),
        ("Suggestion:", "HEADER"),
        ("QUALITY", "HEADER"),
        ("IMPROVEMENT", "HEADER"),
        ("Date:", "QUESTION"),  # read before its answer though its box starts 1 px lower
        ("9/3/92", "ANSWER"),
    ]
    tagged, _ = tag_receipts(receipts, merge_amounts=False, allowed=None)
    assert build_label_list(tagged) == ["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER"]
    assert report.dropped == {"funsd word with empty text": 2}
    result = CliRunner().invoke(
        cli, ["dataset", "stats", "--dataset", f"funsd:{FIXTURES / 'funsd'}", "--allowed-label", "question", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels_after"] == {"QUESTION": 6}


@pytest.mark.parametrize("source", ["sroie", "cord", "funsd"])
def test_convert_writes_our_format(tmp_path, source):
    out = tmp_path / f"{source}.jsonl"
    spec = f"{source}:{FIXTURES / source}"
    result = CliRunner().invoke(cli, ["dataset", "convert", spec, str(out)])
    assert result.exit_code == 0, result.output
    assert f"-> {out}" in result.output
    original, _ = load_receipts(spec)
    back, _ = read_jsonl(out)
    assert [(r.id, r.width, r.height, r.words) for r in back] == [(r.id, r.width, r.height, r.words) for r in original]


def test_convert_errors_are_one_sentence(tmp_path):
    result = CliRunner().invoke(cli, ["dataset", "convert", f"cord:{tmp_path}", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "no json/*.json files" in result.output
    assert not (tmp_path / "o.jsonl").exists()
