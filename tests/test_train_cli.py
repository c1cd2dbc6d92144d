"""End to end through the CLI: a tiny model on demo data and on real WildReceipt receipts."""

import json

import pytest
from conftest import one_sentence_error
from conftest import run_cli as run

from receipt_layoutlm.store import open_store

RECIPE = [
    "--merge-amounts",
    "--o-entity-ratio",
    "0.3",
    "--allowed-label",
    "MERCHANT_NAME",
    "--allowed-label",
    "DATE",
    "--allowed-label",
    "TIME",
    "--allowed-label",
    "PRODUCT_NAME",
    "--allowed-label",
    "AMOUNT",
    "--warmup-ratio",
    "0.2",
    "--label-smoothing",
    "0.1",
]


def train(tmp_path, name, *extra, dataset="demo:40"):
    return run(
        "train",
        "--job-name",
        name,
        "--dataset",
        dataset,
        "--pretrained",
        "tiny",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "5e-4",
        "--output-dir",
        tmp_path / name,
        *extra,
    )


@pytest.mark.slow
def test_train_on_demo_records_everything(env):
    result = train(env, "demo-run", *RECIPE, "--early-stopping-patience", "5")
    assert result.exit_code == 0, result.output
    store = open_store()
    (job,) = store.list_jobs("succeeded")
    assert job.name == "demo-run" and job.job_id in result.output and "best model:" in result.output
    assert [s["status"] for s in store.status_history(job.job_id)] == ["pending", "running", "succeeded"]
    assert job.job_config["merge_amounts"] is True and job.job_config["o_entity_ratio"] == 0.3
    assert job.results["label_list"][0] == "O" and "B-AMOUNT" in job.results["label_list"]
    assert 0 <= job.results["best_f1"] <= 1 and job.results["best_epoch"] in (1, 2)

    f1 = store.metrics(job.job_id, "val_f1")
    assert [m["epoch"] for m in f1] == [1, 2] and all(m["step"] > 0 for m in f1)
    names = {m["metric_name"] for m in store.metrics(job.job_id)}
    for expected in (
        "val_precision",
        "val_recall",
        "eval_loss",
        "train_loss",
        "learning_rate",
        "label_AMOUNT_f1",
        "label_DATE_precision",
        "label_TIME_recall",
        "label_MERCHANT_NAME_support",
        "dataset_train_receipts",
        "dataset_o_entity_ratio_before",
        "dataset_o_entity_ratio_after",
        "dataset_lines_dropped",
    ):
        assert expected in names, expected
    support = store.metrics(job.job_id, "label_AMOUNT_support")[0]["value"]
    assert isinstance(support, int) and support > 0
    # The best evaluation's word-level confusion matrix, over every validation word.
    (confusion,) = store.metrics(job.job_id, "confusion_matrix")
    assert confusion["unit"] == "matrix" and confusion["step"] == job.results["best_step"]
    labels, matrix = confusion["value"]["labels"], confusion["value"]["matrix"]
    assert labels[0] == "O" and "AMOUNT" in labels and len(matrix) == len(labels)
    val_words = json.loads((env / "demo-run" / "run.json").read_text())["dataset"]["val"]["words"]
    assert sum(map(sum, matrix)) == val_words
    logs = [json.loads(l["message"]).get("type") for l in store.logs(job.job_id) if l["message"].startswith("{")]
    assert logs == ["run_config", "run_summary"]

    out = env / "demo-run"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["job_id"] == job.job_id and run_json["status"] == "succeeded"
    assert len(run_json["epoch_metrics"]) == 2 and run_json["summary"]["best_f1"] == job.results["best_f1"]
    assert run_json["split"]["val_receipt_ids"] and run_json["thinning"]["lines_dropped"] > 0
    assert run_json["dataset"]["train"]["entities_per_label"]["AMOUNT"] > 0
    assert run_json["config"]["seed"] == 42
    assert any(p.name.startswith("checkpoint-") for p in out.iterdir())
    assert (out / "checkpoint-20" / "model.safetensors").exists() or any(out.glob("checkpoint-*/model.safetensors"))

    # best/ reloads with from_pretrained and predicts every word of new receipts
    from transformers import AutoTokenizer, LayoutLMForTokenClassification

    model = LayoutLMForTokenClassification.from_pretrained(out / "best")
    assert model.config.id2label[0] == "O" and len(AutoTokenizer.from_pretrained(out / "best")) == 30522
    pred_file = env / "pred.jsonl"
    result = run("predict", "--model", out / "best", "--dataset", "demo:3", "--output", pred_file)
    assert result.exit_code == 0 and "entity F1" in result.output, result.output
    one_sentence_error(
        run("predict", "--model", out / "best", "--dataset", "demo:3", "--output", env), "is a directory"
    )
    below_a_file = pred_file / "x.jsonl"
    one_sentence_error(
        run("predict", "--model", out / "best", "--dataset", "demo:3", "--output", below_a_file), "--output"
    )
    lines = pred_file.read_text().splitlines()
    assert len(lines) == 3 and all(len(json.loads(l)["words"]) > 10 for l in lines)

    # The F1 recorded during training is the F1 of best/ on the validation receipts, whole:
    # evaluation order, window merging and scoring agree with a fresh prediction.
    from receipt_layoutlm.sources import load_receipts
    from receipt_layoutlm.sources.jsonl import write_jsonl

    val_ids = set(run_json["split"]["val_receipt_ids"])
    val_file = env / "val.jsonl"
    write_jsonl([r for r in load_receipts("demo:40")[0] if r.id in val_ids], val_file)
    from receipt_layoutlm.inference.predict import predict_receipts

    assert predict_receipts(out / "best", str(val_file))["f1"] == pytest.approx(job.results["best_f1"], abs=1e-9)

    shown = run("jobs", "show", "demo-run")
    assert shown.exit_code == 0 and "val F1" in shown.output and job.job_id in shown.output
    listed = run("jobs", "list", "--status", "succeeded", "--json")
    assert [j["job_id"] for j in json.loads(listed.output)] == [job.job_id]
    report = env / "report"
    assert run("jobs", "report", "demo-run", "-o", report).exit_code == 0
    assert (report / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "demo-run" in (report / "index.html").read_text()
    metrics = json.loads(run("jobs", "metrics", job.job_id, "--name", "val_f1", "--json").output)
    assert [m["epoch"] for m in metrics] == [1, 2]


@pytest.mark.slow
def test_same_seed_same_data_same_metrics(env):
    scores = []
    for name in ("again-1", "again-2"):
        assert train(env, name, *RECIPE, dataset="demo:24").exit_code == 0
        run_json = json.loads((env / name / "run.json").read_text())
        scores.append(
            (
                [e["val_f1"] for e in run_json["epoch_metrics"]],
                run_json["split"]["val_receipt_ids"],
                run_json["thinning"]["lines_dropped"],
            )
        )
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_line_mode_trains_one_line_per_example(env):
    result = train(env, "lines", "--example-unit", "line", "--max-steps", "6", dataset="demo:16")
    assert result.exit_code == 0, result.output
    run_json = json.loads((env / "lines" / "run.json").read_text())
    assert run_json["dataset"]["train"]["examples"] > 5 * run_json["dataset"]["train"]["receipts"]


@pytest.mark.slow
def test_train_on_real_wildreceipt_receipts(env, wildreceipt_file):
    result = run(
        "train",
        "--job-name",
        "wild",
        "--dataset",
        f"wildreceipt:{wildreceipt_file}",
        "--pretrained",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "5e-4",
        "--output-dir",
        env / "wild",
        "--merge-amounts",
    )
    assert result.exit_code == 0, result.output
    run_json = json.loads((env / "wild" / "run.json").read_text())
    assert run_json["dataset"]["receipts"] == 372
    assert run_json["dataset"]["dropped_by_reader"]["empty text (unreadable segment)"] > 0
    assert {"MERCHANT_NAME", "AMOUNT", "QUANTITY"} <= set(run_json["dataset"]["labels_after"])
    assert (env / "wild" / "best" / "model.safetensors").exists()


def test_user_errors_are_one_sentence_and_leave_records(env):
    bad = env / "bad.jsonl"
    bad.write_text('{"id": "a", "width": 10, "height": 10, "words": []}\n{"id": "b", "width": 10\n')
    one_sentence_error(train(env, "bad-json", dataset=bad), f"{bad}:2", "bad JSON")
    empty = env / "empty.jsonl"
    empty.write_text("\n")
    one_sentence_error(train(env, "empty", dataset=empty), "holds no receipt")
    one_sentence_error(train(env, "unknown", "--allowed-label", "TOTAL"), "TOTAL", "MERCHANT_NAME")
    one_sentence_error(train(env, "none-left", "--allowed-label", "REFUND"), "No entity label is left")
    one_sentence_error(train(env, "missing-model", "--pretrained", "./no/such/model"), "no such directory", "minilm")
    # data, labels and model are checked before the job is created: a refused command leaves no job
    # and no run.json, so the corrected command runs without --overwrite-output-dir
    assert open_store().list_jobs() == []
    assert not any((env / name / "run.json").exists() for name in ("bad-json", "empty", "none-left", "missing-model"))


def test_unreachable_hub_names_the_offline_choices(env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    result = run(
        "train",
        "--job-name",
        "hub",
        "--dataset",
        "demo:6",
        "--output-dir",
        env / "hub",
        "--pretrained",
        "example-org/no-such-model",
    )
    one_sentence_error(result, "Cannot reach the Hugging Face hub", "--pretrained minilm")


@pytest.mark.slow
def test_output_dir_of_another_job_is_refused_and_kept(env):
    assert train(env, "first", "--max-steps", "2", dataset="demo:8").exit_code == 0
    run_json = (env / "first" / "run.json").read_text()
    result = run(
        "train", "--job-name", "second", "--dataset", "demo:8", "--pretrained", "tiny", "--output-dir", env / "first"
    )
    one_sentence_error(result, "already holds job 'first'", "--overwrite-output-dir")
    assert (env / "first" / "run.json").read_text() == run_json

    # A refused --resume (other labels, another dataset) leaves the succeeded job as it was.
    (job,) = open_store().list_jobs()
    one_sentence_error(train(env, "first", "--resume", "--allowed-label", "TIME", dataset="demo:8"), "original flags")
    one_sentence_error(
        train(env, "first", "--resume", dataset="data//missing.jsonl"),
        "--dataset 'demo:8', not 'data//missing.jsonl'",
    )
    assert open_store().get_job(job.job_id).status == "succeeded" and len(open_store().list_jobs()) == 1
    assert (env / "first" / "run.json").read_text() == run_json


def test_console_epochs_are_the_recorded_epochs(env):
    result = train(env, "half", "--epochs", "0.5", dataset="demo:12")
    assert result.exit_code == 0, result.output
    (job,) = open_store().list_jobs()
    assert [m["epoch"] for m in open_store().metrics(job.job_id, "val_f1")] == [1]
    assert "epoch 1: val F1" in result.output and "epoch 0:" not in result.output
