"""The embedded table (store/table.py's contract): DynamoDB's single-table model on one SQLite file.

Each row keeps the whole item in DynamoDB wire JSON plus its key attributes as columns,
so the same queries (partition key + sort-key prefix, on the table or a GSI) run here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ..errors import UserError
from .table import INDEXES, ConditionFailed, ItemExists, StoreUnavailable, backoff_delays
from .wire import item_from_wire, item_to_wire

BUSY_TIMEOUT_S = 30.0  # sqlite's own wait for another writer's lock, per attempt
LOCKED_ATTEMPTS = 5  # then StoreUnavailable; between attempts, exponential backoff with jitter
KEY_COLUMNS = ["PK", "SK", "TYPE", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "GSI3PK", "GSI3SK", "GSI4PK", "GSI4SK"]


class SqliteTable:
    def __init__(self, path: Path):
        self.path = path
        self.description = f"sqlite:///{path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            cols = ", ".join(f"{c} TEXT" for c in KEY_COLUMNS[2:])
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS items (PK TEXT NOT NULL, SK TEXT NOT NULL, {cols}, "
                "item TEXT NOT NULL, PRIMARY KEY (PK, SK))"
            )
            for name, (pk, sk) in INDEXES.items():
                if name:
                    columns = f"{pk}, {sk}" if sk else f"{pk}, PK, SK"
                    self.db.execute(f"CREATE INDEX IF NOT EXISTS idx_{name} ON items ({columns})")
        except (sqlite3.Error, OSError) as e:
            raise UserError(
                f"Cannot open the job store {path} ({e}); pass another --job-store sqlite:///PATH."
            ) from None

    def _row(self, item: dict) -> list:
        return [item.get(c) for c in KEY_COLUMNS] + [json.dumps(item_to_wire(item), ensure_ascii=False)]

    def _retrying(self, operation):
        """Run operation(); "database is locked" (another process held the write lock longer than
        BUSY_TIMEOUT_S) is tried again after a backoff, then raised as StoreUnavailable."""
        delays = backoff_delays(LOCKED_ATTEMPTS, base=0.1, cap=5.0)
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise StoreUnavailable(
                        f"The job store {self.path} stayed locked by another process ({e}) after "
                        f"{LOCKED_ATTEMPTS} attempts; try again when the other writer is done."
                    ) from None
                time.sleep(delay)

    def _failed(self, error: sqlite3.Error) -> UserError:
        if "readonly" in str(error):
            return UserError(
                f"The job store {self.path} is read-only ({error}); make the file and its folder writable "
                "or pass another --job-store sqlite:///PATH."
            )
        return UserError(f"The job store {self.path} failed ({error}); pass another --job-store sqlite:///PATH.")

    def put(self, item: dict, must_not_exist: bool = False, expect: dict | None = None) -> None:
        """See store/table.py: Table.put. expect: None as a value means the attribute is absent."""
        verb = "INSERT" if must_not_exist else "INSERT OR REPLACE"
        marks = ", ".join("?" * (len(KEY_COLUMNS) + 1))

        def put():
            # BEGIN IMMEDIATE takes the write lock first, so no writer slips between the check and the put.
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if expect:
                    stored = self._get(item["PK"], item["SK"])
                    if stored is None or any(stored.get(k) != v for k, v in expect.items()):
                        raise ConditionFailed(f"{item['PK']} {item['SK']}: stored item is not {expect}")
                self.db.execute(f"{verb} INTO items ({', '.join(KEY_COLUMNS)}, item) VALUES ({marks})", self._row(item))
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

        try:
            self._retrying(put)
        except sqlite3.IntegrityError:
            raise ItemExists(f"{item['PK']} {item['SK']}") from None
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def delete(self, pk: str, sk: str) -> None:
        try:
            self._retrying(lambda: self.db.execute("DELETE FROM items WHERE PK=? AND SK=?", (pk, sk)))
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def put_many(self, items: list[dict]) -> None:
        marks = ", ".join("?" * (len(KEY_COLUMNS) + 1))
        rows = [self._row(i) for i in items]

        def put_many():
            with self.db:  # one transaction, like one BatchWriteItem round trip
                self.db.execute("BEGIN")
                self.db.executemany(
                    f"INSERT OR REPLACE INTO items ({', '.join(KEY_COLUMNS)}, item) VALUES ({marks})", rows
                )

        try:
            self._retrying(put_many)
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def _get(self, pk: str, sk: str) -> dict | None:
        row = self.db.execute("SELECT item FROM items WHERE PK=? AND SK=?", (pk, sk)).fetchone()
        return item_from_wire(json.loads(row[0])) if row else None

    def get(self, pk: str, sk: str) -> dict | None:
        try:
            return self._retrying(lambda: self._get(pk, sk))
        except sqlite3.Error as e:
            raise self._failed(e) from None

    def query(
        self,
        pk_value: str,
        sk_prefix: str | None = None,
        index: str | None = None,
        forward: bool = True,
        type_filter: str | None = None,
    ):
        pk, sk = INDEXES[index]
        if sk_prefix and sk is None:
            raise ValueError(f"index {index} has no sort key: sk_prefix must be None")
        sql, args = f"SELECT item FROM items WHERE {pk}=?", [pk_value]
        if sk_prefix:
            sql += f" AND substr({sk}, 1, ?)=?"
            args += [len(sk_prefix), sk_prefix]
        if type_filter:
            sql += " AND TYPE=?"
            args.append(type_filter)
        direction = "ASC" if forward else "DESC"
        # An index without a sort key (GSITYPE) has no order on DynamoDB; here it is PK, then SK.
        sql += f" ORDER BY {sk} {direction}" if sk else f" ORDER BY PK {direction}, SK {direction}"
        try:
            rows = self._retrying(lambda: self.db.execute(sql, args).fetchall())
        except sqlite3.Error as e:
            raise self._failed(e) from None
        for (text,) in rows:
            yield item_from_wire(json.loads(text))
