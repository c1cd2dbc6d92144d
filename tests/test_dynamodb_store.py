"""The job store on DynamoDB Local: the items users' own queries read, paging, and errors in words."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace

import pytest
from aws_servers import free_port
from botocore.exceptions import ClientError

from receipt_layoutlm.errors import UserError
from receipt_layoutlm.store import ConditionFailed, ItemExists, JobStore
from receipt_layoutlm.store.dynamodb import DynamoTable, create_table, explain
from receipt_layoutlm.store.sqlite import SqliteTable

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def table(request, tmp_path):
    if request.param == "sqlite":
        return SqliteTable(tmp_path / "jobs.db")
    return DynamoTable(request.getfixturevalue("fresh_table"), request.getfixturevalue("aws_env"))


def key(item: dict) -> tuple[str, str]:
    return item["PK"]["S"], item["SK"]["S"]


# --- the users' queries -------------------------------------------------------------------


def test_seed_query_finds_succeeded_jobs(fresh_table, raw, aws_env):
    store = JobStore(DynamoTable(fresh_table, aws_env))
    job = store.create_job("receipts-v1", {"epochs": 3})
    other = store.create_job("receipts-v2", {"epochs": 1})
    store.update_job(job, status="running")
    store.update_job(job, status="succeeded", message="done")
    store.update_job(other, status="failed")

    response = raw.query(
        TableName=fresh_table,
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :status",
        ExpressionAttributeValues={":status": {"S": "STATUS#succeeded"}},
    )
    jobs = [i for i in response["Items"] if i["TYPE"]["S"] == "JOB"]
    assert [i["PK"]["S"] for i in jobs] == [f"JOB#{job.job_id}"]
    assert {i["TYPE"]["S"] for i in response["Items"]} == {"JOB", "JOB_STATUS"}
    # The job left the `pending` partition: only its history row stays there.
    pending = raw.query(
        TableName=fresh_table,
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :s",
        ExpressionAttributeValues={":s": {"S": "STATUS#pending"}},
    )["Items"]
    assert {i["TYPE"]["S"] for i in pending} == {"JOB_STATUS"}
    # By name, newest first (GSI2).
    named = raw.query(
        TableName=fresh_table,
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :n",
        ExpressionAttributeValues={":n": {"S": "JOB_NAME#receipts-v1"}},
        ScanIndexForward=False,
    )
    assert [key(i) for i in named["Items"]] == [(f"JOB#{job.job_id}", "JOB")]


def test_job_item_format(fresh_table, raw, aws_env):
    store = JobStore(DynamoTable(fresh_table, aws_env))
    config = {
        "lr": 5e-05,
        "epochs": 3,
        "merge_amounts": True,
        "allowed_labels": ["DATE", "TIME"],
        "o_entity_ratio": None,
        "nested": {"a": 1},
    }
    storage = {
        "bucket": "b",
        "run_root_prefix": "runs/x/",
        "checkpoints_prefix": "runs/x/checkpoints/",
        "best_prefix": "runs/x/best/",
        "logs_prefix": "runs/x/logs/",
    }
    job = store.create_job("fmt", config, description="a test", priority="high", storage=storage)

    item = raw.get_item(TableName=fresh_table, Key={"PK": {"S": f"JOB#{job.job_id}"}, "SK": {"S": "JOB"}})["Item"]
    assert uuid.UUID(job.job_id).version == 4
    assert item["TYPE"] == {"S": "JOB"}
    assert item["GSI1PK"] == {"S": "STATUS#pending"}
    assert item["GSI1SK"] == {"S": f"CREATED#{job.created_at}"}
    assert item["GSI2PK"] == {"S": "JOB_NAME#fmt"}
    assert item["GSI2SK"] == {"S": f"CREATED#{job.created_at}"}
    assert TIMESTAMP.match(item["created_at"]["S"])
    for name, value in {"name": "fmt", "description": "a test", "status": "pending", "priority": "high"}.items():
        assert item[name] == {"S": value}
    assert set(item["created_by"]) == {"S"}
    assert item["job_config"]["M"] == {
        "lr": {"N": "5e-05"},
        "epochs": {"N": "3"},
        "merge_amounts": {"BOOL": True},
        "allowed_labels": {"L": [{"S": "DATE"}, {"S": "TIME"}]},
        "o_entity_ratio": {"NULL": True},
        "nested": {"M": {"a": {"N": "1"}}},
    }
    assert item["storage"]["M"]["checkpoints_prefix"] == {"S": "runs/x/checkpoints/"}
    assert "results" not in item and "tags" not in item  # empty optional maps are left out
    assert "job_id" not in item


def test_history_metric_log_and_checkpoint_items(fresh_table, raw, aws_env):
    store = JobStore(DynamoTable(fresh_table, aws_env))
    job = store.create_job("items", {})
    jid = job.job_id
    store.update_job(job, status="running", message="epoch 1", progress=12.4)
    store.add_metrics(
        jid,
        [
            {"name": "val_f1", "value": 0.5, "step": 10, "epoch": 1, "unit": "ratio"},
            {"name": "confusion", "value": {"DATE": {"DATE": 3}}, "unit": "matrix"},
        ],
    )
    store.add_log(jid, "INFO", {"type": "run_config", "data": {"lr": 1e-4}}, source="trainer")
    store.add_checkpoint(
        jid,
        "bucket",
        "runs/items/checkpoints/checkpoint-10/",
        1234,
        step=10,
        epoch=1,
        is_best=True,
        metrics={"val_f1": 0.5},
    )
    items = raw.query(
        TableName=fresh_table, KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": {"S": f"JOB#{jid}"}}
    )["Items"]
    by_type: dict[str, list] = {}
    for item in items:
        by_type.setdefault(item["TYPE"]["S"], []).append(item)

    status = by_type["JOB_STATUS"][-1]
    at = status["updated_at"]["S"]
    assert TIMESTAMP.match(at)
    assert key(status) == (f"JOB#{jid}", f"STATUS#{at}")
    assert (status["GSI1PK"], status["GSI1SK"]) == ({"S": "STATUS#running"}, {"S": f"UPDATED#{at}"})
    assert status["progress"] == {"N": "12"} and status["message"] == {"S": "epoch 1"}

    f1 = next(i for i in by_type["JOB_METRIC"] if i["metric_name"]["S"] == "val_f1")
    ts = f1["timestamp"]["S"]
    assert TIMESTAMP.match(ts)
    assert key(f1) == (f"JOB#{jid}", f"METRIC#val_f1#{ts}")
    assert (f1["GSI1PK"], f1["GSI1SK"]) == ({"S": "METRIC#val_f1"}, {"S": ts})
    assert (f1["GSI2PK"], f1["GSI2SK"]) == ({"S": "METRIC#val_f1"}, {"S": f"JOB#{jid}#{ts}"})
    assert f1["job_id"] == {"S": jid}
    assert (f1["value"], f1["step"], f1["epoch"], f1["unit"]) == ({"N": "0.5"}, {"N": "10"}, {"N": "1"}, {"S": "ratio"})
    matrix = next(i for i in by_type["JOB_METRIC"] if i["metric_name"]["S"] == "confusion")
    assert matrix["value"] == {"M": {"DATE": {"M": {"DATE": {"N": "3"}}}}}

    (log,) = by_type["JOB_LOG"]
    assert log["SK"]["S"].startswith("LOG#") and TIMESTAMP.match(log["SK"]["S"][4:])
    assert (log["GSI1PK"], log["GSI1SK"]) == ({"S": "LOG"}, {"S": f"JOB#{jid}#{log['SK']['S'][4:]}"})
    assert log["log_level"] == {"S": "INFO"} and log["source"] == {"S": "trainer"}
    assert log["message"]["S"].startswith('{"type": "run_config"')

    (ckpt,) = by_type["JOB_CHECKPOINT"]
    ts = ckpt["timestamp"]["S"]
    assert key(ckpt) == (f"JOB#{jid}", f"CHECKPOINT#{ts}")
    assert (ckpt["GSI1PK"], ckpt["GSI1SK"]) == ({"S": "CHECKPOINT"}, {"S": f"JOB#{jid}#{ts}"})
    assert {
        k: ckpt[k] for k in ("s3_bucket", "size_bytes", "step", "epoch", "model_state", "optimizer_state", "is_best")
    } == {
        "s3_bucket": {"S": "bucket"},
        "size_bytes": {"N": "1234"},
        "step": {"N": "10"},
        "epoch": {"N": "1"},
        "model_state": {"BOOL": True},
        "optimizer_state": {"BOOL": True},
        "is_best": {"BOOL": True},
    }
    assert ckpt["metrics"] == {"M": {"val_f1": {"N": "0.5"}}}


def test_metrics_by_name_keep_the_trailing_hash(fresh_table, raw, aws_env):
    store = JobStore(DynamoTable(fresh_table, aws_env))
    a, b = store.create_job("a", {}), store.create_job("b", {})
    store.add_metrics(a.job_id, [{"name": "val_f1", "value": v, "epoch": e} for e, v in enumerate([0.1, 0.2, 0.3])])
    store.add_metrics(a.job_id, [{"name": "val_f1_macro", "value": 0.9}])
    store.add_metrics(b.job_id, [{"name": "val_f1", "value": 0.7}])

    response = raw.query(
        TableName=fresh_table,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :m)",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{a.job_id}"}, ":m": {"S": "METRIC#val_f1#"}},
    )
    assert [i["value"]["N"] for i in response["Items"]] == ["0.1", "0.2", "0.3"]
    assert [m["value"] for m in store.metrics(a.job_id, "val_f1")] == [0.1, 0.2, 0.3]
    assert len(store.metrics(a.job_id)) == 4
    across = raw.query(
        TableName=fresh_table,
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :m",
        ExpressionAttributeValues={":m": {"S": "METRIC#val_f1"}},
    )["Items"]
    assert sorted(i["job_id"]["S"] for i in across) == sorted([a.job_id] * 3 + [b.job_id])


# --- the same behaviour on both backends ------------------------------------------------------


def test_job_store_reads_back_what_it_wrote(table):
    store = JobStore(table)
    first = store.create_job("run", {"epochs": 1}, tags={"team": "ml"})
    second = store.create_job("run", {"epochs": 2})
    store.update_job(first, status="running")
    store.update_job(first, status="succeeded")
    first.results = {"best_f1": 0.81, "label_list": ["O", "B-DATE"]}
    store.update_job(first)
    store.add_metrics(first.job_id, [{"name": "val_f1", "value": 0.8, "epoch": 0}])
    store.add_log(first.job_id, "WARNING", "slow", exception="none")
    store.add_checkpoint(first.job_id, "b", "k/", 10, step=1, epoch=0)

    assert [j.job_id for j in store.list_jobs("succeeded")] == [first.job_id]
    assert [j.job_id for j in store.list_jobs("pending")] == [second.job_id]
    assert [j.job_id for j in store.list_jobs()] == [first.job_id, second.job_id]
    assert [j.job_id for j in store.jobs_by_name("run")] == [second.job_id, first.job_id]
    assert store.resolve("run").job_id == second.job_id
    again = store.get_job(first.job_id)
    assert (again.status, again.results, again.tags, again.job_config) == (
        "succeeded",
        {"best_f1": 0.81, "label_list": ["O", "B-DATE"]},
        {"team": "ml"},
        {"epochs": 1},
    )
    assert [h["status"] for h in store.status_history(first.job_id)] == ["pending", "running", "succeeded"]
    assert [m["value"] for m in store.metrics(first.job_id, "val_f1")] == [0.8]
    assert [(e["log_level"], e["message"]) for e in store.logs(first.job_id)] == [("WARNING", "slow")]
    assert [c["s3_key"] for c in store.checkpoints(first.job_id)] == ["k/"]
    assert store.get_job("no-such-job") is None
    with pytest.raises(UserError, match="nope"):
        store.resolve("nope")


def test_put_refuses_existing_items_and_put_many_replaces(table):
    item = {"PK": "JOB#x", "SK": "LOG#1", "TYPE": "JOB_LOG", "message": "a"}
    table.put(item, must_not_exist=True)
    with pytest.raises(ItemExists):
        table.put({**item, "message": "b"}, must_not_exist=True)
    table.put_many([{**item, "message": "c"}, {**item, "message": "d"}])  # duplicate keys: the last wins
    assert table.get("JOB#x", "LOG#1")["message"] == "d"
    assert table.get("JOB#x", "LOG#2") is None


def test_conditional_put_is_compare_and_set(table):
    job = {"PK": "JOB#q", "SK": "JOB", "TYPE": "JOB", "status": "pending", "attempt": 1}
    table.put(job)
    table.put({**job, "status": "running", "attempt": 2}, expect={"status": "pending", "attempt": 1})
    with pytest.raises(ConditionFailed):  # a second claimer sees the item already taken
        table.put({**job, "status": "running", "attempt": 9}, expect={"status": "pending"})
    assert (table.get("JOB#q", "JOB")["status"], table.get("JOB#q", "JOB")["attempt"]) == ("running", 2)
    with pytest.raises(ConditionFailed):  # no stored item: the expectation cannot hold
        table.put({**job, "PK": "JOB#absent"}, expect={"status": "pending"})
    assert table.get("JOB#absent", "JOB") is None
    with pytest.raises(ConditionFailed):  # ItemExists is one kind of failed condition
        table.put(job, must_not_exist=True)


def test_query_by_type_and_filter(table):
    table.put_many(
        [
            {"PK": f"P#{i}", "SK": "S", "TYPE": "A" if i % 2 else "B", "GSI1PK": "G", "GSI1SK": f"{i:03d}"}
            for i in range(6)
        ]
    )
    assert sorted(i["PK"] for i in table.query("A", index="GSITYPE")) == ["P#1", "P#3", "P#5"]
    assert [i["PK"] for i in table.query("G", "00", index="GSI1", forward=False, type_filter="B")] == [
        "P#4",
        "P#2",
        "P#0",
    ]


# --- paging and batching on DynamoDB ------------------------------------------------------------


def count_calls(table: DynamoTable, operation: str) -> list:
    """Record each call of one client operation (the real call still runs)."""
    calls, real = [], getattr(table.client, operation)

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    setattr(table.client, operation, spy)
    return calls


def test_query_follows_every_page_of_a_limit(fresh_table, aws_env):
    table = DynamoTable(fresh_table, aws_env)
    store = JobStore(table)
    job = store.create_job("paged", {})
    store.add_metrics(job.job_id, [{"name": "loss", "value": i / 10, "step": i} for i in range(10)])
    table.page_size = 3
    calls = count_calls(table, "query")
    assert [m["step"] for m in store.metrics(job.job_id, "loss")] == list(range(10))
    assert len(calls) == 4 and "ExclusiveStartKey" in calls[-1]


def test_query_follows_one_megabyte_pages(fresh_table, aws_env):
    """DynamoDB returns at most 1 MB per page: 1,100 items of ~1 KB need two."""
    table = DynamoTable(fresh_table, aws_env)
    padding = "x" * 1000
    table.put_many([{"PK": "BIG", "SK": f"ITEM#{i:05d}", "TYPE": "TEST", "pad": padding} for i in range(1100)])
    calls = count_calls(table, "query")
    keys = [i["SK"] for i in table.query("BIG", "ITEM#")]
    assert keys == [f"ITEM#{i:05d}" for i in range(1100)]
    assert len(calls) >= 2


def test_put_many_resends_unprocessed_items(fresh_table, aws_env):
    table = DynamoTable(fresh_table, aws_env)
    real = table.client.batch_write_item
    calls = []

    def throttled(RequestItems):
        """Write all but the last 5 requests of the first batch and hand those back, as throttling does."""
        requests = RequestItems[fresh_table]
        calls.append(len(requests))
        if len(calls) == 1:
            real(RequestItems={fresh_table: requests[:-5]})
            return {"UnprocessedItems": {fresh_table: requests[-5:]}}
        return real(RequestItems=RequestItems)

    table.client.batch_write_item = throttled
    table.put_many([{"PK": "B", "SK": f"{i:03d}", "TYPE": "TEST"} for i in range(30)])
    assert calls == [25, 5, 5]
    assert len(list(table.query("B"))) == 30


def test_gsitype_has_no_sort_key(table):
    with pytest.raises(ValueError, match="no sort key"):
        list(table.query("JOB", "X", index="GSITYPE"))


# --- errors a user can fix ---------------------------------------------------------------------


def test_missing_table(aws_env):
    with pytest.raises(UserError, match=r"DynamoDB table no-such-table not found in region us-east-1.*create-table"):
        JobStore(DynamoTable("no-such-table", aws_env)).get_job("x")


def test_table_without_the_indexes(aws_env, raw):
    name = f"bare-{uuid.uuid4().hex[:8]}"
    raw.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
    )
    with pytest.raises(UserError, match=f"{name} lacks .*GSI1, GSI2, GSI3, GSI4, GSITYPE"):
        DynamoTable(name, aws_env).get("a", "b")


def test_unreachable_endpoint(aws_env):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    message = f"Cannot reach the DynamoDB endpoint {endpoint} for DynamoDB table t1 in region us-east-1"
    with pytest.raises(UserError, match=re.escape(message)):
        DynamoTable("t1", replace(aws_env, dynamodb_endpoint=endpoint)).get("a", "b")


def test_no_credentials(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UserError, match="No AWS credentials found for DynamoDB table t2.*AWS_ACCESS_KEY_ID") as e:
        DynamoTable("t2", aws_env).get("a", "b")
    assert "testing" not in str(e.value)


def test_create_table_twice(fresh_table, aws_env):
    with pytest.raises(UserError, match=f"DynamoDB table {fresh_table} already exists"):
        create_table(fresh_table, aws_env)


@pytest.mark.parametrize("code", ["AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"])
def test_refused_credentials_are_explained(code):
    """DynamoDB Local accepts any key, so the mapping of AWS's refusals is checked directly."""
    error = ClientError(
        {"Error": {"Code": code, "Message": "User: arn:aws:iam::1:user/x is not authorized"}}, "DescribeTable"
    )
    message = str(explain(error, "Receipts", "eu-west-1", "https://dynamodb.eu-west-1.amazonaws.com"))
    assert message.startswith("AWS refused access to DynamoDB table Receipts in region eu-west-1")
    assert code in message and "AWS_PROFILE" in message
