"""ReceiptTagger and `predict`: entities and confidences from a real (tiny, random) model dir,
long receipts through training's windows, models found by job name (local and S3), bad input."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import torch
from click.testing import CliRunner

from receipt_layoutlm.cli import cli
from receipt_layoutlm.errors import UserError
from receipt_layoutlm.inference.tagger import ReceiptTagger
from receipt_layoutlm.sources import Receipt, Word, load_receipts
from receipt_layoutlm.sources.jsonl import write_jsonl

LABELS = ["O"] + [f"{p}-{t}" for t in ("MERCHANT_NAME", "DATE", "PRODUCT_NAME", "AMOUNT") for p in ("B", "I")]
SETTINGS = {
    "example_unit": "receipt",
    "max_seq_length": 512,
    "window_overlap": 128,
    "merge_amounts": True,
    "allowed_labels": ["MERCHANT_NAME", "DATE", "PRODUCT_NAME", "AMOUNT"],
}


def make_model_dir(path: Path, labels=LABELS, **settings) -> Path:
    """A best/ folder as training writes it, holding a tiny random model (seeded)."""
    from receipt_layoutlm.model import load_model
    from receipt_layoutlm.training.artifacts import save_model_dir

    torch.manual_seed(0)
    tokenizer, model = load_model("tiny", labels)
    save_model_dir(path, model, tokenizer, labels, {**SETTINGS, **settings})
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("run") / "best")


@pytest.fixture(scope="module")
def tagger(model_dir) -> ReceiptTagger:
    return ReceiptTagger.from_pretrained(model_dir)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYOUTLM_JOB_STORE", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DYNAMO_TABLE_NAME", raising=False)
    return tmp_path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def as_dict(r: Receipt) -> dict:
    return {
        "width": r.width,
        "height": r.height,
        "words": [{"text": w.text, "box": list(w.box), "line": w.line} for w in r.words],
    }


def test_import_stays_light_and_exposes_the_tagger():
    code = (
        "import sys, receipt_layoutlm; assert 'torch' not in sys.modules; "
        "print(receipt_layoutlm.ReceiptTagger.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ReceiptTagger"


def test_words_confidences_and_entities(tagger):
    receipt = load_receipts("demo:1")[0][0]
    result = tagger.predict(as_dict(receipt))
    assert result.id == "receipt-0" and len(result.words) == len(receipt.words)
    assert tagger.labels == ["MERCHANT_NAME", "DATE", "PRODUCT_NAME", "AMOUNT"]

    # Confidence = softmax probability of the chosen label at the word's first sub-token (one window here).
    from receipt_layoutlm.training.features import build_examples
    from receipt_layoutlm.training.recipe import normalize_box

    seq = {
        "texts": [w.text for w in receipt.words],
        "boxes": [normalize_box(w.box, receipt.width, receipt.height) for w in receipt.words],
    }
    (example,), (window,) = build_examples([seq], tagger.tokenizer, {}, 512, 128)
    with torch.no_grad():
        logits = tagger.model(**{k: torch.tensor([v]) for k, v in example.items() if k != "labels"}).logits[0]
    probs = logits.softmax(-1)
    for (_w, pos), word in zip(window.words, result.words):
        assert word.tag == LABELS[int(probs[pos].argmax())]
        assert word.confidence == pytest.approx(float(probs[pos].max()), abs=1e-5)

    # Entities: every labelled word is in exactly one entity; spans keep one label within one line.
    covered = [i for e in result.entities for i in e.words]
    assert sorted(covered) == [i for i, w in enumerate(result.words) if w.label != "O"]
    assert result.entities
    for e in result.entities:
        words = [result.words[i] for i in e.words]
        assert {w.label for w in words} == {e.label} and len({w.line for w in words}) == 1
        assert e.words == list(range(e.words[0], e.words[-1] + 1))
        assert e.text == " ".join(w.text for w in words)
        assert e.confidence == pytest.approx(sum(w.confidence for w in words) / len(words))
        boxes = [receipt.words[i].box for i in e.words]
        assert e.box == [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]


def test_receipt_objects_and_lists(tagger):
    receipts = load_receipts("demo:3")[0]
    results = tagger.predict(receipts)
    assert [r.id for r in results] == [r.id for r in receipts]
    # Batching does not change a receipt's labels.
    one = tagger.predict(receipts[1])
    assert one.tags == results[1].tags


def test_a_3000_word_receipt_goes_through_windows(model_dir):
    words = [
        Word(
            text=["MILK", "2.49", "BREAD", "TOTAL"][i % 4],
            box=(10 + 40 * (i % 4), i, 40 + 40 * (i % 4), i + 1),
            line=i // 4,
        )
        for i in range(3000)
    ]
    long = Receipt("long", 200, 3001, words)
    batched = ReceiptTagger.from_pretrained(model_dir, batch_size=8)
    single = ReceiptTagger.from_pretrained(model_dir, batch_size=1)
    from receipt_layoutlm.training.features import build_examples

    examples, _ = build_examples(
        [{"texts": [w.text for w in words], "boxes": [[0, 0, 1, 1]] * 3000}], batched.tokenizer, {}
    )
    assert len(examples) > 5  # several overlapping windows
    a, b = batched.predict(long), single.predict(long)
    assert len(a.words) == 3000 and all(0 < w.confidence <= 1 for w in a.words)
    assert a.tags == b.tags
    assert [w.confidence for w in a.words] == pytest.approx([w.confidence for w in b.words], abs=1e-4)


def test_line_unit_models_read_each_line_alone(tmp_path):
    tagger = ReceiptTagger.from_pretrained(make_model_dir(tmp_path / "best", example_unit="line"))
    receipt = load_receipts("demo:1")[0][0]
    whole = tagger.predict(receipt)
    lines = sorted({w.line for w in receipt.words})
    per_line = [
        tagger.predict(Receipt(f"l{n}", receipt.width, receipt.height, [w for w in receipt.words if w.line == n]))
        for n in lines
    ]
    assert whole.tags == [t for p in per_line for t in p.tags]


def test_not_a_model_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ReceiptTagger.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a trained receipt model"):
        ReceiptTagger.from_pretrained(tmp_path / "empty")
    broken = make_model_dir(tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="does not hold a loadable model"):
        ReceiptTagger.from_pretrained(broken)


def test_bad_receipts_are_one_sentence(tagger):
    with pytest.raises(UserError, match=r"word 0: missing `box`"):
        tagger.predict({"width": 100, "height": 100, "words": [{"text": "TOTAL"}]})
    with pytest.raises(UserError, match="outside the 100x100 page"):
        tagger.predict({"width": 100, "height": 100, "words": [{"text": "TOTAL", "box": [10, 10, 150, 20]}]})
    with pytest.raises(UserError, match="missing field `width`"):
        tagger.predict({"words": [{"text": "TOTAL", "box": [1, 1, 2, 2]}]})
    empty = tagger.predict({"width": 100, "height": 100, "words": []})
    assert empty.words == [] and empty.entities == []


def test_cli_predict_writes_words_and_entities(env, model_dir):
    out = env / "pred.jsonl"
    result = run("predict", "--model", model_dir, "--dataset", "demo:3", "--output", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and "entity F1" in result.output
    # The words are still our dataset format: the file reads back as a dataset.
    assert len(load_receipts(str(out))[0]) == 3
    for row in rows:
        assert all(0 < w["confidence"] <= 1 for w in row["words"])
        for e in row["entities"]:
            assert {row["words"][i].get("label") for i in e["words"]} == {e["label"]}


def test_cli_bad_inputs_exit_with_a_sentence(env, model_dir):
    no_box = env / "nobox.jsonl"
    no_box.write_text(json.dumps({"id": "a", "width": 10, "height": 10, "words": [{"text": "x"}]}) + "\n")
    outside = env / "outside.jsonl"
    outside.write_text(
        json.dumps({"id": "a", "width": 10, "height": 10, "words": [{"text": "x", "box": [0, 0, 20, 5]}]}) + "\n"
    )
    for args, expected in (
        (("--model", env, "--dataset", "demo:1"), "not a trained receipt model"),
        (("--model", "no-such-job", "--dataset", "demo:1"), "neither a model directory nor a job"),
        (("--model", model_dir, "--dataset", no_box), "missing `box`"),
        (("--model", model_dir, "--dataset", outside), "outside the 10x10 page"),
    ):
        result = CliRunner().invoke(cli, ["predict", *map(str, args)])
        assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output, result.output


def test_model_by_job_name_local_then_s3(env, model_dir, aws_env):
    from receipt_layoutlm.s3 import S3Sync
    from receipt_layoutlm.store import open_store

    store = open_store()
    job = store.create_job("receipts-full", {"dataset": "demo:40"})
    job.results = {"best_dir": str(model_dir), "best_f1": 0.5}
    store.update_job(job, "succeeded")
    write_jsonl(load_receipts("demo:2")[0], env / "two.jsonl")
    local = run("predict", "--model", "receipts-full", "--dataset", env / "two.jsonl", "--output", env / "a.jsonl")
    assert local.exit_code == 0, local.output

    # The job's best/ only in S3 (e.g. trained on another machine): downloaded once, same predictions.
    bucket = f"runs-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    sync = S3Sync(f"s3://{bucket}/training", "remote-run", aws_env)
    sync.upload_dir(model_dir, sync.best_prefix)
    remote = store.create_job("remote-run", {"dataset": "demo:40"}, storage=sync.storage)
    remote.results = {"best_dir": "/gone/best"}
    store.update_job(remote, "succeeded")
    result = run("predict", "--model", remote.job_id, "--dataset", env / "two.jsonl", "--output", env / "b.jsonl")
    assert result.exit_code == 0, result.output
    assert (env / "cache" / "receipt-layoutlm" / "models" / remote.job_id / "best" / "label_map.json").is_file()
    assert (env / "a.jsonl").read_text() == (env / "b.jsonl").read_text()

    empty = store.create_job("never-trained", {})
    result = CliRunner().invoke(cli, ["predict", "--model", "never-trained", "--dataset", "demo:1"])
    assert result.exit_code == 2 and "has no best/ model" in result.output
    assert empty.job_id in result.output


def test_entity_spans_follow_training_tags():
    from receipt_layoutlm.inference.tagger import WordLabel, entities_of

    texts = ["ACME", "MART", "12", "MAIN", "ST", "1.00", "2.00"]
    lines = [0, 0, 1, 2, 2, 3, 3]
    tags = [
        "B-MERCHANT_NAME",
        "I-MERCHANT_NAME",
        "I-MERCHANT_NAME",
        "I-ADDRESS_LINE",
        "I-ADDRESS_LINE",
        "B-AMOUNT",
        "B-AMOUNT",
    ]
    receipt = Receipt("r", 100, 100, [Word(t, (i, i, i + 1, i + 1), n) for i, (t, n) in enumerate(zip(texts, lines))])
    words = [
        WordLabel(w.text, w.box, w.line, t[2:], t, 0.5 + i / 20) for i, (w, t) in enumerate(zip(receipt.words, tags))
    ]
    spans = [(e.label, e.text, e.words) for e in entities_of(receipt, words)]
    assert spans == [
        ("MERCHANT_NAME", "ACME MART", [0, 1]),
        ("MERCHANT_NAME", "12", [2]),  # an I- tag on a new OCR line starts a new entity, as in training
        ("ADDRESS_LINE", "MAIN ST", [3, 4]),  # a span may start with I- (lenient, like seqeval)
        ("AMOUNT", "1.00", [5]),  # B- after B- of the same label: two entities
        ("AMOUNT", "2.00", [6]),
    ]
    assert entities_of(receipt, words)[0].box == [0, 0, 2, 2]
    assert entities_of(receipt, words)[0].confidence == pytest.approx((0.5 + 0.55) / 2)
