"""The evaluation contract: merchant splits, pinned validation keys, the checkpoint metric and
re-scoring every checkpoint of a run."""

import json

import pytest
from conftest import one_sentence_error
from conftest import run_cli as run

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.sources import Receipt, Word, load_receipts
from receipt_layoutlm.sources.jsonl import read_jsonl, write_jsonl
from receipt_layoutlm.store import open_store
from receipt_layoutlm.training.config import TrainConfig, check_config
from receipt_layoutlm.training.data import parse_val_keys, prepare_data
from receipt_layoutlm.training.recipe import merchant_group


def grouped_file(path, n=40, groups=8):
    """Demo receipts written as JSONL with a `group` field (receipt i belongs to chain-(i % groups))."""
    receipts, _ = load_receipts(f"demo:{n}")
    for i, r in enumerate(receipts):
        r.extra["group"] = f"chain-{i % groups}"
    write_jsonl(receipts, path)
    return path


def sides(data):
    return {r.id for r in data.train}, {r.id for r in data.val}


def test_merchant_split_keeps_each_group_on_one_side_and_is_reproducible(tmp_path):
    receipts, report = read_jsonl(grouped_file(tmp_path / "g.jsonl"))
    assert receipts[0].extra["group"] == "chain-0"  # carried by the reader
    group = {r.id: r.extra["group"] for r in receipts}
    data = prepare_data(receipts, report, val_ratio=0.3, seed=3, split_by="merchant")
    train, val = sides(data)
    assert train and val and train | val == set(group)
    assert not {group[i] for i in train} & {group[i] for i in val}
    assert data.split["groups"]["train"] + data.split["groups"]["val"] == 8
    assert data.split["groups"]["val"] == len({group[i] for i in val})
    # Same seed, shuffled input: the same split; the receipt split of the same data does mix groups.
    again = prepare_data(list(reversed(receipts)), report, val_ratio=0.3, seed=3, split_by="merchant")
    assert sides(again) == (train, val)
    by_receipt = prepare_data(receipts, report, val_ratio=0.3, seed=3)
    tr, va = sides(by_receipt)
    assert {group[i] for i in tr} & {group[i] for i in va}
    seeds = {
        frozenset(sides(prepare_data(receipts, report, val_ratio=0.3, seed=s, split_by="merchant"))[1])
        for s in range(6)
    }
    assert len(seeds) > 1  # the seed decides


def test_merchant_groups_from_merchant_words_on_wildreceipt(wildreceipt_file):
    receipts, report = load_receipts(f"wildreceipt:{wildreceipt_file}")
    group = {r.id: merchant_group(r) for r in receipts}
    names = [g for g in group.values() if g.startswith("merchant:")]
    assert names.count("merchant:costco") > 1  # one merchant, many receipts: one group
    data = prepare_data(receipts, report, val_ratio=0.2, seed=42, split_by="merchant")
    train, val = sides(data)
    assert val and not {group[i] for i in train} & {group[i] for i in val}
    assert data.split["groups_without_merchant"] == sum(g.startswith("receipt:") for g in set(group.values()))


def test_merchant_name_normalised_and_receipts_without_one_stand_alone():
    def r(rid, words, **extra):
        return Receipt(rid, 100, 100, [Word(t, (0, 0, 5, 5), 0, lab) for t, lab in words], extra)

    a = r("a", [("Mc.Donald's", "MERCHANT_NAME"), ("  Main", "MERCHANT_NAME"), ("1.00", "AMOUNT")])
    b = r("b", [("MCDONALDS", "merchant_name"), ("MAIN", "MERCHANT_NAME")])
    assert merchant_group(a) == merchant_group(b) == "merchant:mcdonalds main"
    assert merchant_group(r("c", [("x", "O")])) == "receipt:c"
    assert merchant_group(r("d", [("Other", "MERCHANT_NAME")], group="g1")) == "group:g1"


def test_val_keys_formats_hash_and_errors(tmp_path, env):
    lines = parse_val_keys("b\na\n\na\n", "f")
    assert lines.sha256 == parse_val_keys('["a", "b"]', "g").sha256 != parse_val_keys("a\nc", "h").sha256
    with pytest.raises(UserError, match="holds no receipt id"):
        parse_val_keys("\n\n", "f")
    keys = tmp_path / "keys.txt"
    keys.write_text("nope-1\nnope-2\n")
    one_sentence_error(run("dataset", "stats", "--dataset", "demo:10", "--val-keys", keys), "None of the 2")
    one_sentence_error(run("dataset", "stats", "--dataset", "demo:10", "--val-keys", tmp_path / "no"), "no such file")
    keys.write_text(json.dumps(["demo-00002", "demo-00005", "missing"]))
    shown = run("dataset", "stats", "--dataset", "demo:10", "--val-keys", keys, "--json")
    assert shown.exit_code == 0, shown.output
    split = json.loads(shown.output)["split"]
    assert split["by"] == "val_keys" and split["val_keys_not_in_data"] == 1 and split["val_keys_count"] == 3
    assert json.loads(shown.output)["val"]["receipts"] == 2


def test_checkpoint_metric_names_are_checked():
    for good in ("val_f1", "label_DATE_f1", "macro:DATE, TIME,AMOUNT"):
        check_config(TrainConfig(job_name="x", dataset="demo", checkpoint_metric=good))
    for bad in ("f1", "label__f1", "macro:", "DATE"):
        with pytest.raises(UserError, match="--checkpoint-metric"):
            check_config(TrainConfig(job_name="x", dataset="demo", checkpoint_metric=bad))
    with pytest.raises(UserError, match="--split-by merchant has nothing to decide"):
        check_config(TrainConfig(job_name="x", dataset="demo", val_keys="k", split_by="merchant"))


def train(tmp_path, name, dataset, *extra):
    return run(
        "train",
        "--job-name",
        name,
        "--dataset",
        dataset,
        "--pretrained",
        "tiny",
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--lr",
        "5e-4",
        "--merge-amounts",
        "--save-total-limit",
        "10",
        "--output-dir",
        tmp_path / name,
        *extra,
    )


@pytest.mark.slow
def test_val_keys_checkpoint_metric_and_all_checkpoints(env):
    data = grouped_file(env / "grouped.jsonl")
    ids = [r.id for r in read_jsonl(data)[0]]
    keys = env / "keys.txt"
    keys.write_text("\n".join(ids[::4] + ["not-a-receipt"]) + "\n")
    sha = parse_val_keys(keys.read_text(), "k").sha256

    # A run with the default metric: validated on exactly the keys, their hash recorded everywhere.
    first = train(env, "by-f1", data, "--val-keys", keys)
    assert first.exit_code == 0, first.output
    assert "1 of 11 ids are not in the data" in first.output
    store = open_store()
    job = store.resolve("by-f1")
    run_json = json.loads((env / "by-f1" / "run.json").read_text())
    assert sorted(run_json["split"]["val_receipt_ids"]) == sorted(ids[::4])
    assert run_json["split"]["val_keys_sha256"] == job.job_config["val_keys_sha256"] == sha
    assert job.results["best_metric_name"] == "val_f1" and job.results["best_metric"] == job.results["best_f1"]
    shown = json.loads(run("jobs", "show", "by-f1", "--json").output)
    assert shown["validation"] == {"val_keys_sha256": sha}

    # The same run choosing its checkpoint by one label's F1 (training is the same: same seed, no early
    # stopping). Pick a label whose best epoch differs from val F1's, so that the choice is visible.
    evals = run_json["epoch_metrics"]
    f1_step = max(evals, key=lambda e: e["val_f1"])["step"]
    label = next(
        t
        for t in evals[0]["per_label"]
        if max(evals, key=lambda e: e["per_label"][t]["f1"])["step"] != f1_step
        and max(e["per_label"][t]["f1"] for e in evals) > 0
    )
    metric = f"label_{label}_f1"
    second = train(env, "by-label", data, "--val-keys", keys, "--checkpoint-metric", metric)
    assert second.exit_code == 0, second.output
    job2 = store.resolve("by-label")
    run2 = json.loads((env / "by-label" / "run.json").read_text())
    assert [e["val_f1"] for e in run2["epoch_metrics"]] == [e["val_f1"] for e in evals]
    chosen = max(run2["epoch_metrics"], key=lambda e: e["per_label"][label]["f1"])
    assert job2.results["best_step"] == chosen["step"] != f1_step
    assert job2.results["best_metric_name"] == metric == job2.job_config["checkpoint_metric"]
    assert job2.results["best_metric"] == chosen["per_label"][label]["f1"]
    assert job2.results["best_f1"] == chosen["val_f1"]  # still the entity micro F1, of the chosen checkpoint
    assert run2["summary"]["best_checkpoint"].endswith(f"checkpoint-{chosen['step']}")
    compared = json.loads(run("jobs", "compare", job.job_id, job2.job_id, "--json").output)
    assert compared["same_validation"] is True

    # Every checkpoint re-scored on the pinned keys agrees with what training recorded, best/ included.
    scored = run("evaluate", "--model", "by-label", "--all-checkpoints", "--json")
    assert scored.exit_code == 0, scored.output
    rows = json.loads(scored.output)["checkpoints"]
    assert [r["checkpoint"] for r in rows] == [f"checkpoint-{e['step']}" for e in evals] + ["best"]
    recorded = {e["step"]: e for e in run2["epoch_metrics"]}
    for r in rows:
        assert r["f1"] == pytest.approx(recorded[r["step"]]["val_f1"], abs=1e-9)
        assert r["metric"] == pytest.approx(recorded[r["step"]]["per_label"][label]["f1"], abs=1e-9)
    assert rows[-1]["step"] == chosen["step"]
    table = run("evaluate", "--model", env / "by-label" / "best", "--all-checkpoints")
    assert table.exit_code == 0 and metric in table.output and "checkpoint-" in table.output

    # A third run on a merchant split: a different validation set, and the mismatch is said.
    third = train(env, "by-merchant", data, "--split-by", "merchant", "--val-ratio", "0.3", "--epochs", "1")
    assert third.exit_code == 0, third.output
    job3 = store.resolve("by-merchant")
    assert job3.job_config["split_groups"]["val"] >= 1 and job3.job_config["split_by"] == "merchant"
    compared = json.loads(run("jobs", "compare", job.job_id, job2.job_id, job3.job_id, "--json").output)
    assert compared["same_validation"] is False
    warning = " ".join(run("jobs", "compare", job.job_id, job2.job_id, job3.job_id).output.split())
    assert "different receipts" in warning and "by-merchant: merchant split" in warning and "--val-keys" in warning
    assert "validated on: merchant split" in run("jobs", "show", "by-merchant").output

    # A metric naming a label the run does not learn is refused before any job exists.
    one_sentence_error(train(env, "bad", data, "--checkpoint-metric", "macro:DATE,NOPE"), "NOPE")
    assert store.jobs_by_name("bad") == []
    # `submit` refuses a metric of a label the run would not learn too, before a job is queued.
    queued = run(
        "submit", "--job-name", "queued", "--dataset", data, "--pretrained", "tiny",
        "--allowed-label", "DATE", "--checkpoint-metric", "label_TIME_f1",
    )  # fmt: skip
    one_sentence_error(queued, "label_TIME_f1 names TIME, which this run does not learn")
    assert store.jobs_by_name("queued") == []


def test_val_keys_from_s3(aws_env, tmp_path):
    import boto3

    from receipt_layoutlm.training.data import read_val_keys

    s3 = boto3.client("s3", endpoint_url=aws_env.s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="keys-bucket")
    s3.put_object(Bucket="keys-bucket", Key="eval/val.json", Body=json.dumps(["demo-00003", "demo-00004"]).encode())
    keys = read_val_keys("s3://keys-bucket/eval/val.json", aws_env)
    assert (
        keys.ids == ["demo-00003", "demo-00004"] and keys.sha256 == parse_val_keys("demo-00004\ndemo-00003", "").sha256
    )
    shown = run("dataset", "stats", "--dataset", "demo:10", "--val-keys", "s3://keys-bucket/eval/val.json", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["val"]["receipts"] == 2
    one_sentence_error(
        run("dataset", "stats", "--dataset", "demo:10", "--val-keys", "s3://keys-bucket/eval/nope.txt"),
        "no such object",
    )
