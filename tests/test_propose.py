"""propose and dataset suggest against DynamoDB Local, with a tiny trained model and imported demo receipts."""

import json
import re
from dataclasses import replace
from datetime import datetime

import pytest
from click.testing import CliRunner

from receipt_layoutlm.aws import AwsSettings
from receipt_layoutlm.cli import cli
from receipt_layoutlm.inference.propose import table_label_map
from receipt_layoutlm.labels import CANONICAL_LABELS
from receipt_layoutlm.sources import Receipt, load_receipts
from receipt_layoutlm.sources.dynamodb import image_id_for, import_receipts
from receipt_layoutlm.store.dynamodb import DynamoTable
from receipt_layoutlm.store.wire import item_to_wire

LABELLED = ["demo-00001", "demo-00002", "demo-00003"]


@pytest.fixture
def table(fresh_table, aws_env):
    """3 receipts with VALID labels (imported by the CLI) and 4 with words but no label."""
    result = CliRunner().invoke(cli, ["dataset", "import", "demo:3", "--dynamo-table", fresh_table])
    assert result.exit_code == 0, result.output
    receipts, _ = load_receipts("demo:7")
    unlabelled = [
        Receipt(r.id, r.width, r.height, [replace(w, label="O") for w in r.words], r.extra) for r in receipts[3:]
    ]
    import_receipts(unlabelled, fresh_table, aws_env)
    return fresh_table


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def labels(table_name, status=None):
    items = DynamoTable(table_name, AwsSettings.resolve()).query("RECEIPT_WORD_LABEL", index="GSITYPE")
    return [i for i in items if status is None or i["validation_status"] == status]


def test_propose_writes_spec_items_only_on_unlabelled_receipts(table, tiny_best):
    job_id = json.loads((tiny_best / "label_map.json").read_text())["job_id"]
    valid_before = labels(table, "VALID")

    dry = run("propose", "--model", tiny_best, "--dynamo-table", table, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would write" in dry.output and labels(table) == valid_before  # a dry run writes nothing

    result = run("propose", "--model", tiny_best, "--dynamo-table", table)
    assert result.exit_code == 0, result.output
    assert "4 receipts" in result.output
    proposed = labels(table, "PENDING")
    assert proposed and len(labels(table)) == len(valid_before) + len(proposed)
    written = int(re.search(r"(\d+) written", result.output).group(1))
    assert written == len(proposed)
    dry_count = int(re.search(r"(\d+) would write", dry.output).group(1))
    assert dry_count == written

    unlabelled_images = {image_id_for(f"demo-0000{k}") for k in range(4, 8)}
    words = DynamoTable(table, AwsSettings.resolve())
    for item in proposed:
        iid = item["PK"].removeprefix("IMAGE#")
        assert iid in unlabelled_images
        m = re.fullmatch(r"RECEIPT#(\d{5})#LINE#(\d{5})#WORD#(\d{5})#LABEL#([A-Z_]+)", item["SK"])
        assert m, item["SK"]
        r, ln, w, label = m.groups()
        assert label in CANONICAL_LABELS
        word_key = f"IMAGE#{iid}#RECEIPT#{r}#LINE#{ln}#WORD#{w}"
        assert words.get(item["PK"], f"RECEIPT#{r}#LINE#{ln}#WORD#{w}")["TYPE"] == "RECEIPT_WORD"
        expected = {
            "TYPE": "RECEIPT_WORD_LABEL",
            "GSI1PK": f"LABEL#{label}" + "_" * (40 - len(f"LABEL#{label}")),
            "GSI1SK": word_key,
            "GSI2PK": "RECEIPT",
            "GSI2SK": word_key,
            "GSI3PK": "VALIDATION_STATUS#PENDING",
            "GSI3SK": f"{word_key}#LABEL#{label}",
            "GSI4PK": f"IMAGE#{iid}#RECEIPT#{r}",
            "GSI4SK": f"4_LABEL#{ln}#{w}#{label}",
            "validation_status": "PENDING",
            "label_proposed_by": f"layoutlm:{job_id}",
            "label_consolidated_from": None,
        }
        assert {k: item[k] for k in expected} == expected
        assert len(item["GSI1PK"]) == 40
        confidence = float(re.search(r"confidence (\d\.\d{3})", item["reasoning"]).group(1))
        assert 0 < confidence <= 1
        stamp = datetime.fromisoformat(item["timestamp_added"])
        assert stamp.utcoffset().total_seconds() == 0 and re.search(r"\.\d{6}\+00:00$", item["timestamp_added"])
        # On the wire: the attributes the user's client reads, with their DynamoDB types.
        wire = item_to_wire(item)
        assert wire["label_consolidated_from"] == {"NULL": True} and "S" in wire["reasoning"]
        assert set(item) == set(expected) | {"PK", "SK", "reasoning", "timestamp_added"}

    again = run("propose", "--model", tiny_best, "--dynamo-table", table)
    assert again.exit_code == 0 and "0 written" in again.output and f"{written} skipped" in again.output
    assert len(labels(table, "PENDING")) == len(proposed)  # idempotent


def test_propose_never_overwrites_a_valid_label(table, tiny_best):
    valid_before = {(i["PK"], i["SK"]): i for i in labels(table, "VALID")}
    result = run("propose", "--model", tiny_best, "--dynamo-table", table, "--receipts", "all")
    assert result.exit_code == 0, result.output
    skipped = int(re.search(r"(\d+) skipped", result.output).group(1))
    assert skipped > 0  # the model agreed with some VALID labels: those items were left alone
    valid_after = {(i["PK"], i["SK"]): i for i in labels(table, "VALID")}
    assert valid_after == valid_before
    pending = labels(table, "PENDING")
    assert not {(i["PK"], i["SK"]) for i in pending} & set(valid_before)
    assert {i["PK"] for i in pending} & {f"IMAGE#{image_id_for(r)}" for r in LABELLED}  # labelled receipts too


def test_propose_one_receipt_with_min_confidence(table, tiny_best):
    iid = image_id_for("demo-00005")
    one = ["propose", "--model", tiny_best, "--dynamo-table", table, "--image-id", iid, "--receipt-id", 1]
    dry = run(*one, "--dry-run")
    confidences = sorted(float(c) for c in re.findall(r"\((\d\.\d{3})\)$", dry.output, re.M))
    assert dry.exit_code == 0 and "1 receipts" in dry.output and len(confidences) > 2
    threshold = confidences[len(confidences) // 2]  # the median: about half the words pass
    result = run(*one, "--min-confidence", threshold)
    assert result.exit_code == 0, result.output
    pending = labels(table, "PENDING")
    assert {i["PK"] for i in pending} == {f"IMAGE#{iid}"}
    assert len(pending) == sum(c >= threshold for c in confidences) < len(confidences)
    assert f"{sum(c < threshold for c in confidences)} below --min-confidence" in result.output
    assert all(float(re.search(r"confidence (\S+)", i["reasoning"]).group(1)) >= threshold - 1e-3 for i in pending)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-id", "x"], "both --image-id and --receipt-id"),
        (["--image-id", "0f0f0f0f-0000-4000-8000-000000000000", "--receipt-id", "1"], "not in dynamodb://"),
        (["--min-confidence", "1.5"], "between 0 and 1"),
        (["--amount-label", "GRAND_TOTAL"], "only to models trained with --merge-amounts"),
    ],
)
def test_propose_refuses_in_one_sentence(table, tiny_best, args, message):
    result = run("propose", "--model", tiny_best, "--dynamo-table", table, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not labels(table, "PENDING")


def test_amount_needs_an_explicit_table_label():
    with pytest.raises(Exception, match="--amount-label"):
        table_label_map(["AMOUNT", "DATE"], True, None)
    assert table_label_map(["AMOUNT", "DATE"], True, "skip") == {"AMOUNT": None, "DATE": "DATE"}
    assert table_label_map(["AMOUNT"], True, "GRAND_TOTAL") == {"AMOUNT": "GRAND_TOTAL"}


def test_suggest_names_distinct_unlabelled_receipts(table, tiny_best):
    unlabelled = {image_id_for(f"demo-0000{k}") for k in range(4, 8)}
    result = run("dataset", "suggest", "--model", tiny_best, "--dynamo-table", table, "-n", 3, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 3 and len({r["image_id"] for r in rows}) == 3
    assert {r["image_id"] for r in rows} <= unlabelled and all(r["receipt_id"] == 1 for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all("entropy" in r["reason"] for r in rows)

    # One receipt per merchant key: never two of the same merchant.
    one_each = json.loads(
        run("dataset", "suggest", "--model", tiny_best, "--dynamo-table", table, "--per-merchant", 1, "--json").output
    )
    keys = [r["merchant_key"] for r in one_each]
    assert len(keys) == len(set(keys))

    random_rows = json.loads(run("dataset", "suggest", "--dynamo-table", table, "--by", "random", "--json").output)
    assert {r["image_id"] for r in random_rows} == unlabelled and len(random_rows) == 4
    again = json.loads(run("dataset", "suggest", "--dynamo-table", table, "--by", "random", "--json").output)
    assert again == random_rows  # seeded
