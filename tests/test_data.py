"""Reading receipts: our JSONL format strictly, and the real WildReceipt files in ../shared."""

import json

import pytest

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.sources import load_receipts
from receipt_layoutlm.sources.jsonl import read_jsonl, write_jsonl
from receipt_layoutlm.sources.wildreceipt import read_wildreceipt

GOOD = {
    "id": "img-1#00001",
    "width": 600,
    "height": 1400,
    "source": "test",
    "words": [
        {"text": "TRADER", "box": [112, 40, 230, 66], "line": 0, "label": "MERCHANT_NAME"},
        {"text": "JOE'S", "box": [240, 40, 330, 66], "line": 0, "label": "MERCHANT_NAME"},
        {"text": "BANANAS", "box": [20, 300, 140, 322], "line": 9},
        {"text": "0.99", "box": [500, 300, 560, 322], "line": 9, "label": "LINE_TOTAL"},
    ],
}


def write(tmp_path, *objs, raw=None):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(o) for o in objs] + ([raw] if raw else [])
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_the_documented_example_and_round_trips(tmp_path):
    receipts, report = read_jsonl(write(tmp_path, GOOD))
    (r,) = receipts
    assert (
        r.id == "img-1#00001"
        and r.width == 600
        and [w.label for w in r.words] == ["MERCHANT_NAME", "MERCHANT_NAME", "O", "LINE_TOTAL"]
    )
    assert r.words[2].line == 9 and r.extra == {"source": "test"} and report.dropped == {}
    out = tmp_path / "out.jsonl"
    write_jsonl(receipts, out)
    assert read_jsonl(out)[0] == receipts


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o.pop("width"), "missing field `width`"),
        (lambda o: o["words"][1].update(text=" "), "word 1: empty or missing `text`"),
        (lambda o: o["words"][0].update(box=[112, 40, 700, 66]), "outside the 600x1400 page"),
        (lambda o: o["words"][0].update(box=[230, 40, 112, 66]), "x1<x0"),
        (lambda o: o.update(height=0), "must be positive"),
    ],
)
def test_bad_records_name_file_line_and_problem(tmp_path, mutate, message):
    bad = json.loads(json.dumps(GOOD))
    bad["id"] = "second"
    mutate(bad)
    path = write(tmp_path, GOOD, bad)
    with pytest.raises(UserError) as e:
        read_jsonl(path)
    assert f"{path}:2" in str(e.value) and message in str(e.value)


def test_bad_json_and_missing_file(tmp_path):
    path = write(tmp_path, GOOD, raw='{"id": "x", "width": 1,')
    with pytest.raises(UserError, match=rf"{path}:2: bad JSON"):
        read_jsonl(path)
    with pytest.raises(UserError, match="does not exist"):
        load_receipts(str(tmp_path / "nope.jsonl"))


def test_demo_spec_and_bad_demo_size():
    receipts, _ = load_receipts("demo:5")
    assert len(receipts) == 5
    with pytest.raises(UserError, match="positive integer"):
        load_receipts("demo:many")


def test_wildreceipt_real_file(wildreceipt_file):
    receipts, report = read_wildreceipt(wildreceipt_file)
    assert len(receipts) == 372
    labels = {w.label for r in receipts for w in r.words}
    assert {
        "MERCHANT_NAME",
        "ADDRESS_LINE",
        "PHONE_NUMBER",
        "DATE",
        "TIME",
        "PRODUCT_NAME",
        "QUANTITY",
        "LINE_TOTAL",
        "SUBTOTAL",
        "TAX",
        "GRAND_TOTAL",
    } <= labels
    assert report.dropped["empty text (unreadable segment)"] > 0
    r = receipts[0]
    assert r.words[0].text == "COSTCO" and r.words[0].label == "MERCHANT_NAME"
    assert all(0 <= w.box[0] <= w.box[2] <= r.width and 0 <= w.box[1] <= w.box[3] <= r.height for w in r.words)
    lines = [w.line for w in r.words]
    assert lines == sorted(lines) and len(set(lines)) > 10


def test_non_finite_numbers_are_one_sentence(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_text('{"id": "a", "width": NaN, "height": 10, "words": [{"text": "x", "box": [0, 0, 1, 1]}]}\n')
    with pytest.raises(UserError, match=r"nan.jsonl:1: `width` must be a finite number, got nan"):
        read_jsonl(path)


@pytest.mark.parametrize(
    "annotation, message",
    [
        ({"text": "SHOP", "label": 1}, r"annotation 0 \('SHOP'\) needs a `box` of 8 numbers"),
        ({"text": "SHOP", "box": [0, 0, 9, 0, 9, 9], "label": 1}, "needs a `box` of 8 numbers"),
        ({"text": "SHOP", "box": [0, 0, 9, 0, 9, 9, 0, 9]}, "needs a numeric `label`"),
    ],
)
def test_wildreceipt_annotation_problems_are_one_sentence(tmp_path, annotation, message):
    (tmp_path / "class_list.txt").write_text("Ignore\nStore_name_value\n")
    path = tmp_path / "wild.txt"
    path.write_text(json.dumps({"file_name": "r1.jpeg", "width": 100, "height": 100, "annotations": [annotation]}))
    with pytest.raises(UserError, match=message):
        read_wildreceipt(path)
