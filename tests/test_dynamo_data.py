"""Receipts into and out of the receipts table (DynamoDB Local), in the spec's item formats."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from receipt_layoutlm.cli.aws import register
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.sources import Receipt, Word
from receipt_layoutlm.sources.dynamodb import image_id_for, import_receipts, load_dynamo_receipts, receipt_key
from receipt_layoutlm.sources.wildreceipt import read_wildreceipt
from receipt_layoutlm.store.dynamodb import DynamoTable

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture(scope="module")
def wildreceipts(wildreceipt_file):
    receipts, _ = read_wildreceipt(wildreceipt_file)
    return receipts[:20]


def small_receipt() -> Receipt:
    """Two lines on a 100x200 page; line 1's words given right-to-left to check the reading order."""
    return Receipt(
        id="small-1",
        width=100,
        height=200,
        words=[
            Word("ACME", (10, 10, 40, 20), 0, "MERCHANT_NAME"),
            Word("MARKET", (45, 10, 90, 20), 0, "MERCHANT_NAME"),
            Word("1.99", (70, 50, 95, 60), 1, "LINE_TOTAL"),
            Word("MILK", (5, 50, 30, 60), 1, "PRODUCT_NAME"),
            Word("thanks", (30, 100, 70, 110), 2),
        ],
    )


def test_import_then_export_gives_back_the_receipts(fresh_table, wildreceipts, aws_env):
    counts = import_receipts(wildreceipts, fresh_table, aws_env)
    assert counts["receipts"] == 20
    assert counts["words"] == sum(len(r.words) for r in wildreceipts)
    assert counts["lines"] == sum(len({w.line for w in r.words}) for r in wildreceipts)
    assert counts["labels"] == sum(w.label != "O" for r in wildreceipts for w in r.words)

    loaded, report = load_dynamo_receipts(fresh_table, aws_env)
    assert report.dropped == {}
    by_id = {r.id: r for r in loaded}
    labelled = [r for r in wildreceipts if any(w.label != "O" for w in r.words)]
    assert sorted(by_id) == sorted(receipt_key(image_id_for(r.id), 1) for r in labelled)
    for original in labelled:
        back = by_id[receipt_key(image_id_for(original.id), 1)]
        assert (back.width, back.height) == (original.width, original.height)
        assert [(w.text, w.label, w.line) for w in back.words] == [(w.text, w.label, w.line) for w in original.words]
        tolerance = 1e-6 * max(original.width, original.height)
        for a, b in zip(back.words, original.words, strict=True):
            assert a.box == pytest.approx(b.box, abs=tolerance)


def test_imported_items_follow_the_spec(fresh_table, raw, aws_env):
    import_receipts([small_receipt()], fresh_table, aws_env)
    iid = image_id_for("small-1")
    assert uuid.UUID(iid).version == 4 and image_id_for("small-1") == iid
    items = raw.query(
        TableName=fresh_table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"IMAGE#{iid}"}},
    )["Items"]
    by_sk = {i["SK"]["S"]: i for i in items}
    base = f"IMAGE#{iid}#RECEIPT#00001"

    receipt = by_sk["RECEIPT#00001"]
    assert {k: receipt[k]["S"] for k in ("TYPE", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "GSI4PK", "GSI4SK")} == {
        "TYPE": "RECEIPT",
        "GSI1PK": f"IMAGE#{iid}",
        "GSI1SK": "RECEIPT#00001",
        "GSI2PK": "RECEIPT",
        "GSI2SK": base,
        "GSI4PK": base,
        "GSI4SK": "0_RECEIPT",
    }
    assert (receipt["width"], receipt["height"]) == ({"N": "100"}, {"N": "200"})
    assert TIMESTAMP.match(receipt["timestamp_added"]["S"])
    assert receipt["raw_s3_key"] == {"S": "small-1"} and "S" in receipt["raw_s3_bucket"]
    assert {a: float(v["N"]) for a, v in receipt["top_left"]["M"].items()} == {"x": 0.0, "y": 1.0}

    word = by_sk["RECEIPT#00001#LINE#00001#WORD#00001"]  # "1.99", first word of line 1 in the file
    assert word["text"] == {"S": "1.99"}
    assert {
        k: word[k]["S"]
        for k in (
            "TYPE",
            "GSI1PK",
            "GSI1SK",
            "GSI2PK",
            "GSI2SK",
            "GSI3PK",
            "GSI3SK",
            "GSI4PK",
            "GSI4SK",
            "embedding_status",
        )
    } == {
        "TYPE": "RECEIPT_WORD",
        "GSI1PK": "EMBEDDING_STATUS#NONE",
        "GSI1SK": f"WORD#{base}#LINE#00001#WORD#00001",
        "GSI2PK": "RECEIPT",
        "GSI2SK": f"{base}#LINE#00001#WORD#00001",
        "GSI3PK": base,
        "GSI3SK": "WORD",
        "GSI4PK": base,
        "GSI4SK": "3_WORD#00001#00001",
        "embedding_status": "NONE",
    }
    # Box (70, 50)-(95, 60) on 100x200, as 0-1 corners with the origin bottom-left.
    corners = {
        name: {a: float(v["N"]) for a, v in word[name]["M"].items()}
        for name in ("top_left", "top_right", "bottom_left", "bottom_right", "bounding_box")
    }
    assert corners["top_left"] == pytest.approx({"x": 0.70, "y": 0.75})
    assert corners["top_right"] == pytest.approx({"x": 0.95, "y": 0.75})
    assert corners["bottom_left"] == pytest.approx({"x": 0.70, "y": 0.70})
    assert corners["bottom_right"] == pytest.approx({"x": 0.95, "y": 0.70})
    assert corners["bounding_box"] == pytest.approx({"x": 0.70, "y": 0.70, "width": 0.25, "height": 0.05})
    assert [float(word[k]["N"]) for k in ("angle_degrees", "angle_radians", "confidence")] == [0, 0, 1]
    assert word["is_noise"] == {"BOOL": False} and word["extracted_data"] == {"NULL": True}

    line = by_sk["RECEIPT#00001#LINE#00001"]
    assert {k: line[k]["S"] for k in ("TYPE", "GSI1PK", "GSI1SK", "GSI3PK", "GSI3SK", "GSI4PK", "GSI4SK", "text")} == {
        "TYPE": "RECEIPT_LINE",
        "GSI1PK": "EMBEDDING_STATUS#NONE",
        "GSI1SK": f"LINE#{base}#LINE#00001",
        "GSI3PK": base,
        "GSI3SK": "LINE",
        "GSI4PK": base,
        "GSI4SK": "2_LINE#00001",
        "text": "1.99 MILK",
    }
    assert float(line["bounding_box"]["M"]["width"]["N"]) == pytest.approx(0.90)  # union of both words

    label = by_sk["RECEIPT#00001#LINE#00001#WORD#00001#LABEL#LINE_TOTAL"]
    word_key = f"{base}#LINE#00001#WORD#00001"
    assert {
        k: label[k]["S"]
        for k in (
            "TYPE",
            "GSI1PK",
            "GSI1SK",
            "GSI2PK",
            "GSI2SK",
            "GSI3PK",
            "GSI3SK",
            "GSI4PK",
            "GSI4SK",
            "validation_status",
        )
    } == {
        "TYPE": "RECEIPT_WORD_LABEL",
        "GSI1PK": "LABEL#LINE_TOTAL" + "_" * 24,
        "GSI1SK": word_key,
        "GSI2PK": "RECEIPT",
        "GSI2SK": word_key,
        "GSI3PK": "VALIDATION_STATUS#VALID",
        "GSI3SK": f"{word_key}#LABEL#LINE_TOTAL",
        "GSI4PK": base,
        "GSI4SK": "4_LABEL#00001#00001#LINE_TOTAL",
        "validation_status": "VALID",
    }
    assert len(label["GSI1PK"]["S"]) == 40
    assert TIMESTAMP.match(label["timestamp_added"]["S"])
    assert label["reasoning"] == {"NULL": True} and label["label_consolidated_from"] == {"NULL": True}
    assert not any(sk.endswith("#LABEL#O") for sk in by_sk)  # "thanks" has no label item
    assert sum(i["TYPE"]["S"] == "RECEIPT_WORD_LABEL" for i in items) == 4


def test_reimport_overwrites_the_same_items(fresh_table, raw, aws_env):
    import_receipts([small_receipt()], fresh_table, aws_env)
    import_receipts([small_receipt()], fresh_table, aws_env)
    assert raw.scan(TableName=fresh_table, Select="COUNT")["Count"] == 1 + 3 + 5 + 4


def test_reading_order_and_boxes(fresh_table, aws_env):
    import_receipts([small_receipt()], fresh_table, aws_env)
    (receipt,), _ = load_dynamo_receipts(fresh_table, aws_env)
    assert receipt.id == f"{image_id_for('small-1')}#00001"
    assert [(w.text, w.line, w.label) for w in receipt.words] == [
        ("ACME", 0, "MERCHANT_NAME"),
        ("MARKET", 0, "MERCHANT_NAME"),
        ("MILK", 1, "PRODUCT_NAME"),
        ("1.99", 1, "LINE_TOTAL"),
        ("thanks", 2, "O"),
    ]
    assert receipt.words[3].box == pytest.approx((70, 50, 95, 60))


def add_label(table: DynamoTable, iid: str, line: int, word: int, label: str, status: str = "VALID") -> None:
    """A label item as the users' labelling tools write it (only the keys the loader reads)."""
    word_key = f"IMAGE#{iid}#RECEIPT#00001#LINE#{line:05d}#WORD#{word:05d}"
    table.put(
        {
            "PK": f"IMAGE#{iid}",
            "SK": f"RECEIPT#00001#LINE#{line:05d}#WORD#{word:05d}#LABEL#{label}",
            "TYPE": "RECEIPT_WORD_LABEL",
            "GSI3PK": f"VALIDATION_STATUS#{status}",
            "GSI3SK": f"{word_key}#LABEL#{label}",
            "validation_status": status,
        }
    )


def test_several_labels_aliases_and_missing_words_are_counted(fresh_table, aws_env):
    import_receipts([small_receipt()], fresh_table, aws_env)
    table, iid = DynamoTable(fresh_table, aws_env), image_id_for("small-1")
    add_label(table, iid, 0, 1, "DATE")  # ACME: MERCHANT_NAME comes first in the canonical order
    add_label(table, iid, 1, 2, "PHONE_NUMBER")  # MILK: PHONE_NUMBER (3rd) beats PRODUCT_NAME (12th)
    add_label(table, iid, 2, 1, "ADDRESS")  # thanks: an old alias
    add_label(table, iid, 0, 2, "BUSINESS_NAME")  # MARKET: alias of its own label, so not ambiguous
    add_label(table, iid, 7, 1, "TAX")  # no such word
    add_label(table, iid, 1, 1, "TOTAL_DUE", status="PENDING")

    (receipt,), report = load_dynamo_receipts(fresh_table, aws_env)
    assert [w.label for w in receipt.words] == [
        "MERCHANT_NAME",
        "MERCHANT_NAME",
        "PHONE_NUMBER",
        "LINE_TOTAL",
        "ADDRESS_LINE",
    ]
    assert report.dropped == {
        "word with several VALID labels: kept MERCHANT_NAME over DATE": 1,
        "word with several VALID labels: kept PHONE_NUMBER over PRODUCT_NAME": 1,
        "label whose word is missing": 1,
    }

    (receipt,), report = load_dynamo_receipts(fresh_table, aws_env, statuses=("VALID", "PENDING"))
    assert receipt.words[3].label == "LINE_TOTAL"  # unknown names rank after the canonical ones
    assert "word with several VALID/PENDING labels: kept LINE_TOTAL over TOTAL_DUE" in report.dropped


def test_no_labelled_receipts(fresh_table, aws_env):
    with pytest.raises(UserError, match=f"No receipts with VALID word labels found in DynamoDB table {fresh_table}"):
        load_dynamo_receipts(fresh_table, aws_env)


def test_cli_import_and_export(fresh_table, tmp_path):
    @click.group()
    def cli():
        pass

    register(cli)
    runner = CliRunner()
    result = runner.invoke(cli, ["dataset", "import", "demo:3", "--dynamo-table", fresh_table])
    assert result.exit_code == 0, result.output
    assert "Imported 3 receipts" in result.output
    out = tmp_path / "export.jsonl"
    result = runner.invoke(cli, ["dataset", "export", str(out)], env={"DYNAMO_TABLE_NAME": fresh_table})
    assert result.exit_code == 0, result.output
    assert "Wrote 3 receipts" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["words"] for r in rows)
    result = runner.invoke(cli, ["dynamo", "create-table", fresh_table])
    assert isinstance(result.exception, UserError) and "already exists" in str(result.exception)


def old_sequential_loader(monkeypatch):
    """The loader as it was before GSI4/projections/direct parsing, kept verbatim in the benchmark."""
    path = Path(__file__).resolve().parents[1] / "bench" / "dynamo_load.py"
    spec = importlib.util.spec_from_file_location("dynamo_load_bench", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module.load_sequential


def page_receipt(receipt_id: str, width: float = 100, height: float = 200, words: int = 5) -> Receipt:
    """A receipt with `words` labelled words on `words` // 2 + 1 lines."""
    return Receipt(
        id=receipt_id,
        width=width,
        height=height,
        words=[
            Word(f"w{i}", (10 + i, 10 + 10 * (i // 2), 20 + i, 18 + 10 * (i // 2)), i // 2, "PRODUCT_NAME")
            for i in range(words)
        ],
    )


def test_new_loader_gives_exactly_the_old_loaders_receipts(fresh_table, aws_env, monkeypatch):
    """The GSI4 / projected / directly parsed loader against the old one, on the cases that need care."""
    table = DynamoTable(fresh_table, aws_env)
    receipts = {
        "plain": page_receipt("plain"),
        "float-size": page_receipt("float-size", width=612.5, height=791.25),
        "big": page_receipt("big", words=40),  # many pages once pages hold 3 items
        "no-receipt-item": page_receipt("no-receipt-item"),
        "zero-width": page_receipt("zero-width"),
        "no-gsi4": page_receipt("no-gsi4"),  # items written without GSI4 keys: the GetItem/GSI3 way
        "odd-words": page_receipt("odd-words", words=7),
        "unlabelled": Receipt("unlabelled", 100, 200, [Word("x", (1, 1, 5, 5), 0)]),
        "only-pending": Receipt("only-pending", 100, 200, [Word("y", (1, 1, 5, 5), 0)]),
    }
    import_receipts(list(receipts.values()), fresh_table, aws_env)
    iid = {name: image_id_for(name) for name in receipts}

    def word_item(name: str, line: int, word: int) -> dict:
        return table.get(f"IMAGE#{iid[name]}", f"RECEIPT#00001#LINE#{line:05d}#WORD#{word:05d}")

    table.client.delete_item(
        TableName=fresh_table, Key={"PK": {"S": f"IMAGE#{iid['no-receipt-item']}"}, "SK": {"S": "RECEIPT#00001"}}
    )
    table.put({**table.get(f"IMAGE#{iid['zero-width']}", "RECEIPT#00001"), "width": 0})
    for item in table.query(f"IMAGE#{iid['no-gsi4']}"):
        table.put({k: v for k, v in item.items() if k not in ("GSI4PK", "GSI4SK")})
    odd = {  # (line id, word id) -> changed attributes; word ids count from 1, line ids here from 0
        (0, 1): {"text": "   "},  # empty once stripped
        (0, 2): {"text": None},
        (1, 1): {k: None for k in ("top_left", "top_right", "bottom_left", "bottom_right")},  # bounding_box only
        (1, 2): {k: None for k in ("top_left", "top_right", "bottom_left", "bottom_right", "bounding_box")},
        (2, 1): {"top_left": {"x": 0, "y": 1}, "top_right": {"x": 1, "y": 1}},  # integer numbers; a clamped box
    }
    for (line, word), changes in odd.items():
        item = {**word_item("odd-words", line, word), **changes}
        table.put({k: v for k, v in item.items() if v is not None or k == "text"})
    item = word_item("odd-words", 3, 1)  # a coordinate stored as a string, as a careless tool might
    item["top_left"] = {"x": str(item["top_left"]["x"]), "y": item["top_left"]["y"]}
    table.put(item)

    add_label(table, iid["plain"], 0, 1, "DATE")  # two VALID labels on one word
    add_label(table, iid["plain"], 0, 1, "MERCHANT_NAME")  # three
    add_label(table, iid["plain"], 0, 2, "product_name")  # the same label in other case: not ambiguous
    add_label(table, iid["plain"], 9, 9, "TAX")  # no such word
    add_label(table, iid["plain"], 1, 1, "TOTAL_DUE", status="PENDING")
    add_label(table, iid["plain"], 1, 2, "TIP", status="INVALID")
    add_label(table, iid["only-pending"], 0, 1, "DATE", status="PENDING")
    table.put(  # a label whose GSI3 sort key is exactly a bound of the label query's ranges
        {
            "PK": f"IMAGE#{iid['plain']}",
            "SK": "RECEIPT#00001#LINE#00002#WORD#00001#LABEL#TIP",
            "TYPE": "RECEIPT_WORD_LABEL",
            "GSI3PK": "VALIDATION_STATUS#VALID",
            "GSI3SK": "IMAGE#8",
        }
    )
    add_label(table, iid["big"], 0, 1, "ADDRESS")  # an alias, ranked over PRODUCT_NAME; read over many pages
    for name in ("no-receipt-item", "zero-width"):
        add_label(table, iid[name], 7, 7, "TAX")
    add_label(table, image_id_for("words-missing"), 0, 1, "DATE")  # a Receipt item but no words at all
    table.put({"PK": f"IMAGE#{image_id_for('words-missing')}", "SK": "RECEIPT#00001", "TYPE": "RECEIPT"} | {
        "width": 10, "height": 10, "GSI4PK": f"IMAGE#{image_id_for('words-missing')}#RECEIPT#00001",
        "GSI4SK": "0_RECEIPT"})  # fmt: skip

    # Small pages everywhere: every query of both loaders has to follow LastEvaluatedKey (GSI4 pages
    # whose items the server filtered out entirely included).
    init = DynamoTable.__init__

    def small_pages(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.page_size = 3

    monkeypatch.setattr(DynamoTable, "__init__", small_pages)
    load_old = old_sequential_loader(monkeypatch)
    for statuses in (("VALID",), ("VALID", "PENDING"), ("pending", "INVALID")):
        old, old_report = load_old(fresh_table, aws_env, statuses)
        new, new_report = load_dynamo_receipts(fresh_table, aws_env, statuses=statuses, max_workers=4)
        assert new == old
        assert new_report == old_report

    loaded, report = load_dynamo_receipts(fresh_table, aws_env)
    by_name = {name: next((r for r in loaded if r.id == receipt_key(iid[name], 1)), None) for name in receipts}
    assert {name for name, r in by_name.items() if r} == {"plain", "float-size", "big", "no-gsi4", "odd-words"}
    assert (by_name["float-size"].width, by_name["float-size"].height) == (612.5, 791.25)
    assert len(by_name["big"].words) == 40 and by_name["big"].words[0].label == "ADDRESS_LINE"
    assert [w.text for w in by_name["odd-words"].words] == ["w2", "w4", "w5", "w6"]
    assert by_name["odd-words"].words[1].box == (0.0, 0.0, 100.0, pytest.approx(38.0))
    assert report.dropped == {
        "word with several VALID labels: kept MERCHANT_NAME over DATE, PRODUCT_NAME": 1,
        "word with several VALID labels: kept ADDRESS_LINE over PRODUCT_NAME": 1,
        "word with several VALID labels: kept PRODUCT_NAME over TIP": 1,
        "label whose word is missing": 1 + 1,
        "labelled receipt without a Receipt item with width and height": 2,
        "labelled receipt with no words": 1,
        "word with empty text": 2,
        "word without corner points": 1,
    }


def test_a_receipt_is_one_gsi4_query(fresh_table, aws_env, monkeypatch):
    """Receipts with GSI4 keys cost one request each (no GetItem, no GSI3 word query) besides the label query."""
    import_receipts([page_receipt(f"r{i}") for i in range(3)], fresh_table, aws_env)
    calls = []
    call = DynamoTable._call

    def counted(self, operation, **kwargs):
        calls.append((operation, kwargs.get("IndexName")))
        return call(self, operation, **kwargs)

    monkeypatch.setattr(DynamoTable, "_call", counted)
    receipts, _ = load_dynamo_receipts(fresh_table, aws_env)
    assert len(receipts) == 3
    label_ranges = [("query", "GSI3")] * 16  # the label partition, read as 16 sort-key ranges at once
    assert sorted(calls, key=str) == [("describe_table", None), *label_ranges, *[("query", "GSI4")] * 3]
