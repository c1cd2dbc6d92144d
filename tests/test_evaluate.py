"""`evaluate`: scores checked by hand on a small case, then the CLI on a real (tiny) model dir."""

import json

import pytest
from click.testing import CliRunner
from test_tagger import make_model_dir

from receipt_layoutlm.cli import cli
from receipt_layoutlm.inference.evaluate import evaluate_predictions
from receipt_layoutlm.inference.tagger import Prediction, WordLabel
from receipt_layoutlm.sources import Receipt, Word


def receipt(rid, texts):
    return Receipt(rid, 100, 100, [Word(t, (0, i, 10, i + 1), i // 2) for i, t in enumerate(texts)])


def prediction(r, tags, conf=0.9):
    return Prediction(
        r.id, [WordLabel(w.text, w.box, w.line, t[2:] if t != "O" else "O", t, conf) for w, t in zip(r.words, tags)]
    )


def test_scores_confusion_and_errors_by_hand():
    a = receipt("a", ["ACME", "STORE", "01/02/24", "x", "TOTAL", "9.99"])
    b = receipt("b", ["SHOP", "12:30", "y", "z"])
    true = [
        ["B-MERCHANT_NAME", "I-MERCHANT_NAME", "B-DATE", "O", "O", "B-AMOUNT"],
        ["B-MERCHANT_NAME", "B-TIME", "O", "O"],
    ]
    pred = [
        prediction(a, ["B-MERCHANT_NAME", "I-MERCHANT_NAME", "B-AMOUNT", "O", "O", "B-AMOUNT"]),
        prediction(b, ["O", "O", "B-DATE", "O"], conf=0.8),
    ]
    # The model knows MERCHANT_NAME, DATE and AMOUNT; TIME is in the data only.
    result = evaluate_predictions([a, b], true, pred, ["MERCHANT_NAME", "DATE", "AMOUNT"])
    # 5 true entities, 4 predicted, 2 correct (ACME STORE, 9.99).
    assert result["micro"]["precision"] == pytest.approx(2 / 4)
    assert result["micro"]["recall"] == pytest.approx(2 / 5)
    assert result["per_label"]["MERCHANT_NAME"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert result["per_label"]["TIME"]["support"] == 1 and result["per_label"]["TIME"]["recall"] == 0
    assert result["unknown_labels"] == {"TIME": 1}
    # Macro F1 averages the types' F1: MERCHANT 2/3, DATE 0, AMOUNT 2/3 (P 1/2, R 1), TIME 0.
    assert result["macro"]["f1"] == pytest.approx((2 / 3 + 0 + 2 / 3 + 0) / 4)
    names, matrix = result["confusion"]["labels"], result["confusion"]["matrix"]
    assert names == ["O", "MERCHANT_NAME", "DATE", "AMOUNT", "TIME"]
    cell = {(names[i], names[j]): v for i, row in enumerate(matrix) for j, v in enumerate(row) if v}
    assert cell == {
        ("MERCHANT_NAME", "MERCHANT_NAME"): 2,
        ("DATE", "AMOUNT"): 1,
        ("O", "O"): 3,
        ("AMOUNT", "AMOUNT"): 1,
        ("MERCHANT_NAME", "O"): 1,
        ("TIME", "O"): 1,
        ("O", "DATE"): 1,
    }
    worst = result["worst_receipts"]
    assert [w["id"] for w in worst] == ["b", "a"]
    assert worst[0]["errors"] == 3 and worst[0]["word_errors"] == 3
    assert [m["label"] for m in worst[0]["missed"]] == ["MERCHANT_NAME", "TIME"]
    assert worst[0]["spurious"] == [{"label": "DATE", "text": "y", "words": [2], "confidence": pytest.approx(0.8)}]
    assert worst[1]["confused"][0] | {"confidence": 0} == {
        "label": "DATE",
        "predicted": "AMOUNT",
        "text": "01/02/24",
        "words": [2],
        "confidence": 0,
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{tmp_path / 'jobs.db'}")
    return tmp_path


def test_cli_evaluate_json_table_and_per_receipt(env):
    model = make_model_dir(env / "best")
    predicted = CliRunner().invoke(cli, ["predict", "--model", str(model), "--dataset", "demo:6"])
    result = CliRunner().invoke(
        cli, ["evaluate", "--model", str(model), "--dataset", "demo:6", "--json", "--per-receipt", str(env / "r.jsonl")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["receipts"] == 6 and set(data["per_label"]) == {"MERCHANT_NAME", "DATE", "PRODUCT_NAME", "AMOUNT"}
    # Same model, same data: the same micro F1 as predict prints; merges/whitelist of the run applied.
    assert f"entity F1 {data['micro']['f1']:.4f}" in predicted.output
    assert data["merge_amounts"] is True and "LINE_TOTAL" not in data["labels_after"]
    assert data["unknown_labels"] == {}
    matrix = data["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == data["words"]
    rows = [json.loads(line) for line in (env / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"missed", "spurious", "confused", "errors"} <= set(rows[0])
    assert len(data["worst_receipts"]) <= 6

    table = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--dataset", "demo:6"])
    assert table.exit_code == 0
    for text in ("macro", "per label", "confusion matrix", "most errors", "PRODUCT_NAME"):
        assert text in table.output, text


def test_labels_the_model_never_learned_are_reported(env):
    # A run without a whitelist that only ever saw DATE: the data's other labels are scored as missed.
    model = make_model_dir(env / "best", labels=["O", "B-DATE", "I-DATE"], allowed_labels=[], merge_amounts=False)
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--dataset", "demo:4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "MERCHANT_NAME" in data["unknown_labels"] and "GRAND_TOTAL" in data["unknown_labels"]
    assert data["per_label"]["MERCHANT_NAME"]["recall"] == 0 and data["per_label"]["MERCHANT_NAME"]["support"] > 0
    shown = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--dataset", "demo:4"])
    assert "never learned" in shown.output and "(not learned)" in shown.output


def test_unlabelled_data_is_refused(env):
    model = make_model_dir(env / "best")
    plain = env / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "width": 10, "height": 10, "words": [{"text": "x", "box": [0, 0, 5, 5]}]}))
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--dataset", str(plain)])
    assert result.exit_code == 2 and "no labelled entity" in result.output


def test_evaluate_a_job_on_an_imported_dataset(env):
    from pathlib import Path

    from receipt_layoutlm.store import open_store

    labels = ["O"] + [f"{p}-{t}" for t in ("MERCHANT_NAME", "ADDRESS_LINE", "DATE", "GRAND_TOTAL") for p in ("B", "I")]
    model = make_model_dir(env / "best", labels=labels, allowed_labels=[], merge_amounts=False)
    store = open_store()
    job = store.create_job("sroie-run", {})
    job.results = {"best_dir": str(model)}
    store.update_job(job, "succeeded")
    sroie = Path(__file__).parent / "fixtures" / "sroie"
    result = CliRunner().invoke(cli, ["evaluate", "--model", "sroie-run", "--dataset", f"sroie:{sroie}", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # 4 + 3 located values (the second receipt's address was not found); the address spans
    # 4 OCR lines, and an entity never crosses a line (as in training), so it counts 4 times.
    assert data["entities"] == 10 and data["unknown_labels"] == {}
    assert {k: v["support"] for k, v in data["per_label"].items()} == {
        "MERCHANT_NAME": 2,
        "ADDRESS_LINE": 4,
        "DATE": 2,
        "GRAND_TOTAL": 2,
    }
    assert data["dropped_by_reader"] == {"sroie address value not found in the OCR lines": 1}


def test_per_receipt_writes_a_review_queue_of_confident_false_positives(env):
    model = make_model_dir(env / "best")
    out = env / "errors.jsonl"
    result = CliRunner().invoke(
        cli, ["evaluate", "--model", str(model), "--dataset", "demo:6", "--per-receipt", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "review queue" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    queue = [json.loads(line) for line in (env / "errors.review.jsonl").read_text().splitlines()]
    # Every spurious or confused entity of every receipt, once, most confident first.
    expected = sorted(
        (r["id"], k, tuple(e["words"]), e["confidence"]) for r in rows for k in ("spurious", "confused") for e in r[k]
    )
    assert queue and sorted((q["id"], q["kind"], tuple(q["words"]), q["confidence"]) for q in queue) == expected
    confidences = [q["confidence"] for q in queue]
    assert confidences == sorted(confidences, reverse=True)
