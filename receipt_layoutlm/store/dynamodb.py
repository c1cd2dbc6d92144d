"""The DynamoDB table backend: the same put/get/query as SqliteTable, on a real table.

Items go through the wire codec (wire.py), so both backends hold identical items. The
table is described once on first use; a missing table, missing indexes, missing
credentials or an unreachable endpoint become one UserError sentence instead of a
botocore traceback. Credentials are never printed.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, InvalidRegionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..aws import AwsSettings, aws_session
from ..aws import explain as aws_explain
from ..errors import UserError
from .table import INDEXES, ConditionFailed, ItemExists, StoreUnavailable
from .wire import item_from_wire, item_to_wire, to_wire

GSI_NAMES = tuple(name for name in INDEXES if name)
BATCH_SIZE = 25  # BatchWriteItem's limit
BATCH_RETRIES = 8
WRITE_THREADS = 8
ENDPOINT_HINT = "--endpoint-url/DYNAMODB_ENDPOINT_URL, --region"
# botocore's "standard" retry mode retries these (and any 5xx, connection errors and timeouts) with
# exponential backoff and full jitter (1 s base, 20 s cap); what still fails after RETRIES is StoreUnavailable.
RETRIES = 4
THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionInProgressException",
}


def make_client(aws: AwsSettings):
    """One low-level client; botocore clients are thread-safe, so it is shared by threads."""
    config = Config(
        retries={"max_attempts": RETRIES, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,
    )
    try:
        return aws_session().client(
            "dynamodb", region_name=aws.region, endpoint_url=aws.dynamodb_endpoint, config=config
        )
    except (InvalidRegionError, ValueError) as e:
        raise UserError(
            f"Cannot use DynamoDB region {aws.region!r} or endpoint {aws.dynamodb_endpoint!r} ({e}); "
            "check --region and --endpoint-url."
        ) from None


def transient(error: Exception) -> bool:
    """A failure that may pass: no answer, throttling, or a server error (HTTP 5xx)."""
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in THROTTLING or code == "InternalServerError" or status >= 500
    return False


def explain(error: Exception, table_name: str, region: str, endpoint: str) -> UserError | None:
    """A botocore failure as one sentence naming the table/endpoint and the fix; None if not ours to explain.
    A transient one (still failing after botocore's retries) is a StoreUnavailable."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            return UserError(
                f"DynamoDB table {table_name} not found in region {region}; create it with "
                f"`layoutlm-cli dynamo create-table {table_name}` or check --dynamo-table/--region."
            )
        if code == "ValidationException" and "table/index name" in str(error):
            return UserError(
                f"{table_name!r} is not a valid DynamoDB table name (3-255 characters: letters, "
                "digits, '_', '-' and '.'); fix --dynamo-table."
            )
    what = f"DynamoDB table {table_name} in region {region}"
    explained = aws_explain(error, "DynamoDB", what, endpoint, ENDPOINT_HINT)
    if transient(error):
        if explained is None:
            reason = error.response["Error"].get("Code") if isinstance(error, ClientError) else type(error).__name__
            explained = UserError(
                f"{what} still refused the request after {RETRIES} retries ({reason}); try again later."
            )
        return StoreUnavailable(str(explained))
    return explained


class DynamoTable:
    def __init__(self, table_name: str, aws: AwsSettings | None = None):
        aws = aws or AwsSettings()
        self.table_name = table_name
        self.region = aws.region
        self.endpoint_url = aws.dynamodb_endpoint
        self.description = f"dynamodb://{table_name}"
        self.page_size: int | None = None  # Limit per Query page; None = DynamoDB's 1 MB pages
        self.client = make_client(aws)
        self._checked = False
        self._check_lock = threading.Lock()

    # --- calls and their errors -------------------------------------------------------
    def _call(self, operation: str, **kwargs):
        """Run one client operation; known failures become a UserError sentence."""
        try:
            return getattr(self.client, operation)(**kwargs)
        except (BotoCoreError, ClientError) as e:
            user_error = explain(e, self.table_name, self.region, self.client.meta.endpoint_url)
            if user_error is None:
                raise
            raise user_error from None

    def _ensure_table(self) -> None:
        """Describe the table once: fail early, in words, when it or its indexes are missing."""
        if self._checked:
            return
        with self._check_lock:
            if self._checked:
                return
            table = self._call("describe_table", TableName=self.table_name)["Table"]
            keys = {k["KeyType"]: k["AttributeName"] for k in table.get("KeySchema", [])}
            if keys != {"HASH": "PK", "RANGE": "SK"}:
                raise UserError(
                    f"DynamoDB table {self.table_name} has key schema {keys}, not PK (hash) + SK "
                    "(range); point --dynamo-table at the receipts table."
                )
            present = {g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])}
            missing = [name for name in GSI_NAMES if name not in present]
            if missing:
                raise UserError(
                    f"DynamoDB table {self.table_name} lacks the global secondary index(es) "
                    f"{', '.join(missing)}; recreate it with `layoutlm-cli dynamo create-table` or "
                    "add them (their keys are in docs/job-store.md)."
                )
            self._checked = True

    # --- the backend interface (store/table.py: Table) ---------------------------------
    def put(self, item: dict, must_not_exist: bool = False, expect: dict | None = None) -> None:
        """See store/table.py: Table.put. expect: None as a value means the attribute is absent."""
        self._ensure_table()
        kwargs = {"TableName": self.table_name, "Item": item_to_wire(item)}
        if must_not_exist:
            kwargs["ConditionExpression"] = "attribute_not_exists(PK)"
        elif expect:
            terms, names, values = [], {}, {}
            for i, (name, value) in enumerate(expect.items()):
                names[f"#a{i}"] = name
                if value is None:
                    terms.append(f"attribute_not_exists(#a{i})")
                else:
                    terms.append(f"#a{i} = :v{i}")
                    values[f":v{i}"] = to_wire(value)
            kwargs["ConditionExpression"] = " AND ".join(["attribute_exists(PK)", *terms])
            kwargs["ExpressionAttributeNames"] = names
            if values:
                kwargs["ExpressionAttributeValues"] = values
        try:
            self._call("put_item", **kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                if must_not_exist:
                    raise ItemExists(f"{item['PK']} {item['SK']}") from None
                raise ConditionFailed(f"{item['PK']} {item['SK']}: expected {expect}") from None
            raise

    def delete(self, pk: str, sk: str) -> None:
        self._ensure_table()
        self._call("delete_item", TableName=self.table_name, Key={"PK": {"S": pk}, "SK": {"S": sk}})

    def put_many(self, items: list[dict]) -> None:
        """BatchWriteItem in chunks of 25. Like SqliteTable, a later item replaces an earlier one
        with the same key (a batch may not hold duplicate keys)."""
        self._ensure_table()
        unique = list({(i["PK"], i["SK"]): i for i in items}.values())
        batches = [
            [{"PutRequest": {"Item": item_to_wire(i)}} for i in unique[start : start + BATCH_SIZE]]
            for start in range(0, len(unique), BATCH_SIZE)
        ]
        if len(batches) <= 1:
            for batch in batches:
                self._write_batch(batch)
            return
        # Round trips dominate: a few batches in flight at once (the client is thread-safe).
        with ThreadPoolExecutor(max_workers=min(WRITE_THREADS, len(batches))) as pool:
            for _ in pool.map(self._write_batch, batches):
                pass

    def _write_batch(self, requests: list[dict]) -> None:
        """Send one batch; resend what DynamoDB left unprocessed (throttling) with exponential backoff."""
        for attempt in range(BATCH_RETRIES + 1):
            response = self._call("batch_write_item", RequestItems={self.table_name: requests})
            requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
            if not requests:
                return
            if attempt < BATCH_RETRIES:
                time.sleep(min(0.05 * 2**attempt, 5.0) * (0.5 + random.random()))
        raise StoreUnavailable(
            f"DynamoDB table {self.table_name} kept {len(requests)} writes unprocessed after "
            f"{BATCH_RETRIES} retries (throttling); try again later or raise the table's capacity."
        )

    def get(self, pk: str, sk: str) -> dict | None:
        self._ensure_table()
        response = self._call(
            "get_item", TableName=self.table_name, ConsistentRead=True, Key={"PK": {"S": pk}, "SK": {"S": sk}}
        )
        return item_from_wire(response["Item"]) if "Item" in response else None

    def query(
        self,
        pk_value: str,
        sk_prefix: str | None = None,
        index: str | None = None,
        forward: bool = True,
        type_filter: str | None = None,
    ):
        """Items whose partition key is pk_value (and sort key starts with sk_prefix), every page."""
        if index not in INDEXES:
            raise ValueError(f"unknown index {index!r}; use None, {', '.join(GSI_NAMES)}")
        pk_name, sk_name = INDEXES[index]
        if sk_prefix and sk_name is None:
            raise ValueError(f"index {index} has no sort key: sk_prefix must be None")
        kwargs = {
            "ScanIndexForward": forward,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": pk_name},
            "ExpressionAttributeValues": {":pk": {"S": pk_value}},
        }
        if index:
            kwargs["IndexName"] = index
        if sk_prefix:
            kwargs["KeyConditionExpression"] += " AND begins_with(#sk, :sk)"
            kwargs["ExpressionAttributeNames"]["#sk"] = sk_name
            kwargs["ExpressionAttributeValues"][":sk"] = {"S": sk_prefix}
        if type_filter:
            kwargs["FilterExpression"] = "#t = :t"
            kwargs["ExpressionAttributeNames"]["#t"] = "TYPE"
            kwargs["ExpressionAttributeValues"][":t"] = {"S": type_filter}
        for item in self.query_wire(**kwargs):
            yield item_from_wire(item)

    def query_wire(self, **query_kwargs):
        """The items of one Query (every page) as DynamoDB sent them, undecoded: for readers that set
        their own key condition, filter or ProjectionExpression and decode only what they read."""
        self._ensure_table()
        kwargs = {"TableName": self.table_name, **query_kwargs}
        if self.page_size:
            kwargs["Limit"] = self.page_size
        while True:
            page = self._call("query", **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def create_table(table_name: str, aws: AwsSettings | None = None) -> DynamoTable:
    """Create the receipts table (PK/SK, GSI1-4, GSITYPE, on demand, TTL; docs/job-store.md) and wait until ACTIVE."""
    table = DynamoTable(table_name, aws)
    gsi_keys = [(name, keys) for name, keys in INDEXES.items() if name]
    attributes = ["PK", "SK"] + [a for _, keys in gsi_keys for a in keys if a]
    indexes = [
        {
            "IndexName": name,
            "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"}]
            + ([{"AttributeName": sk, "KeyType": "RANGE"}] if sk else []),
        }
        for name, (pk, sk) in gsi_keys
    ]
    try:
        table._call(
            "create_table",
            TableName=table_name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attributes],
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=indexes,
        )
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ResourceInUseException":
            raise UserError(
                f"DynamoDB table {table_name} already exists in region {table.region}; use it with "
                f"--dynamo-table {table_name} or choose another name."
            ) from None
        raise
    _wait_until_active(table)
    _enable_ttl(table)
    return table


def _wait_until_active(table: DynamoTable, timeout_s: float = 600) -> None:
    """The table and each index must be ACTIVE before items can be written and queried."""
    deadline = time.monotonic() + timeout_s
    while True:
        description = table._call("describe_table", TableName=table.table_name)["Table"]
        statuses = [description["TableStatus"]] + [
            g.get("IndexStatus", "ACTIVE") for g in description.get("GlobalSecondaryIndexes", [])
        ]
        if all(s == "ACTIVE" for s in statuses):
            return
        if time.monotonic() > deadline:
            raise UserError(
                f"DynamoDB table {table.table_name} is still not ACTIVE after {timeout_s:.0f} s; "
                "check it in the AWS console."
            )
        time.sleep(1)


def _enable_ttl(table: DynamoTable) -> None:
    try:
        table._call(
            "update_time_to_live",
            TableName=table.table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "time_to_live"},
        )
    except ClientError:
        # DynamoDB Local and other emulators may not support TTL; real AWS must.
        if not table.endpoint_url:
            raise
