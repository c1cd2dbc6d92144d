"""The table backend contract: what JobStore needs from a table, and both backends provide.

Backends: `SqliteTable` (sqlite.py, the embedded default) and `DynamoTable` (dynamodb.py,
the receipts table). They hold identical items (wire.py) and answer the same queries;
docs/job-store.md describes the items and this contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..errors import UserError

# Key attributes of the table (None) and of each global secondary index: (partition key, sort key).
# GSITYPE has no sort key on DynamoDB (its order within a TYPE is unspecified); SqliteTable
# orders a GSITYPE query by PK then SK, which callers must not rely on.
INDEXES: dict[str | None, tuple[str, str | None]] = {
    None: ("PK", "SK"),
    "GSI1": ("GSI1PK", "GSI1SK"),
    "GSI2": ("GSI2PK", "GSI2SK"),
    "GSI3": ("GSI3PK", "GSI3SK"),
    "GSI4": ("GSI4PK", "GSI4SK"),
    "GSITYPE": ("TYPE", None),
}


class ConditionFailed(Exception):
    """A conditional put found the stored item not as expected; nothing was written."""


class ItemExists(ConditionFailed):
    """put(..., must_not_exist=True) found an item with the same PK and SK; nothing was written."""


class StoreUnavailable(UserError):
    """The store did not answer, or kept refusing for throttling/locking, after bounded retries with
    exponential backoff and jitter; nothing is known to be written. Worth trying again later: a
    training run journals what it could not write (store/journal.py) instead of stopping."""


def backoff_delays(attempts: int, base: float, cap: float):
    """Exponential backoff with full jitter: attempts - 1 sleeps of random(0, min(cap, base * 2**i))."""
    import random

    for i in range(attempts - 1):
        yield random.uniform(0, min(cap, base * 2**i))


class Table(Protocol):
    """Items are dicts of str keys and DynamoDB-storable values (wire.py); every item has string
    `PK` and `SK`, and the key attributes of INDEXES it has are strings.

    Every method retries throttling and transient failures itself (bounded, exponential backoff with
    jitter) and then raises StoreUnavailable; any other failure is a UserError or a bug."""

    description: str  # the store's URI, e.g. sqlite:///path or dynamodb://Table, for messages

    def put(self, item: dict, must_not_exist: bool = False, expect: dict | None = None) -> None:
        """Write one item, replacing the stored item with the same PK and SK.

        must_not_exist: raise ItemExists if an item with that key is stored.
        expect: {attribute: value}: write only if the stored item exists and each attribute
        equals its value, a value of None meaning the attribute is absent (compare-and-set, e.g.
        {"status": "pending"} to claim a pending job); else raise ConditionFailed. The check and
        the write are one atomic step.
        """
        ...

    def delete(self, pk: str, sk: str) -> None:
        """Remove the item with that key; no error if there is none (e.g. a claimed QueueJob)."""
        ...

    def put_many(self, items: list[dict]) -> None:
        """Write items unconditionally, in as few round trips as the backend allows. Among
        items with the same key the last one wins. Not atomic as a whole on DynamoDB."""
        ...

    def get(self, pk: str, sk: str) -> dict | None:
        """The item with that key (a strongly consistent read), or None."""
        ...

    def query(
        self,
        pk_value: str,
        sk_prefix: str | None = None,
        index: str | None = None,
        forward: bool = True,
        type_filter: str | None = None,
    ) -> Iterator[dict]:
        """Every item whose partition key (of the table, or of `index`, a name in INDEXES) equals
        pk_value and, if sk_prefix is given, whose sort key starts with it; in sort-key order
        (descending when forward is False), all pages. type_filter keeps items whose TYPE equals it.
        An index without a sort key (GSITYPE) takes no sk_prefix (ValueError) and has no order.
        """
        ...
