"""The embedded table: DynamoDB's single-table model on one SQLite file.

Each row keeps the whole item in DynamoDB wire JSON plus its key attributes as columns,
so the same queries (partition key + sort-key prefix, on the table or a GSI) run here.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..errors import UserError
from .wire import item_from_wire, item_to_wire

INDEXES = {
    None: ("PK", "SK"),
    "GSI1": ("GSI1PK", "GSI1SK"),
    "GSI2": ("GSI2PK", "GSI2SK"),
    "GSI3": ("GSI3PK", "GSI3SK"),
    "GSI4": ("GSI4PK", "GSI4SK"),
    "GSITYPE": ("TYPE", "SK"),
}
KEY_COLUMNS = ["PK", "SK", "TYPE", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "GSI3PK", "GSI3SK", "GSI4PK", "GSI4SK"]


class ItemExists(Exception):
    pass


class ConditionFailed(Exception):
    """A conditional put whose `expect` did not hold: someone else changed the item first."""


def matches(stored: dict | None, expect: dict) -> bool:
    """`expect` maps attribute -> value the stored item must hold; None means the attribute is absent."""
    stored = stored or {}
    return all(stored.get(name) == value for name, value in expect.items())


class SqliteTable:
    def __init__(self, path: Path):
        self.path = path
        self.description = f"sqlite:///{path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            cols = ", ".join(f"{c} TEXT" for c in KEY_COLUMNS[2:])
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS items (PK TEXT NOT NULL, SK TEXT NOT NULL, {cols}, "
                "item TEXT NOT NULL, PRIMARY KEY (PK, SK))"
            )
            for name, (pk, sk) in INDEXES.items():
                if name:
                    self.db.execute(f"CREATE INDEX IF NOT EXISTS idx_{name} ON items ({pk}, {sk})")
        except (sqlite3.Error, OSError) as e:
            raise UserError(
                f"Cannot open the job store {path} ({e}); pass another --job-store sqlite:///PATH."
            ) from None

    def _row(self, item: dict) -> list:
        return [item.get(c) for c in KEY_COLUMNS] + [json.dumps(item_to_wire(item), ensure_ascii=False)]

    def put(self, item: dict, must_not_exist: bool = False, expect: dict | None = None) -> None:
        """Write an item. must_not_exist: raise ItemExists if the key is taken. expect: write only if the
        stored item holds these attribute values (None = absent), else raise ConditionFailed."""
        verb = "INSERT" if must_not_exist else "INSERT OR REPLACE"
        marks = ", ".join("?" * (len(KEY_COLUMNS) + 1))
        sql = f"{verb} INTO items ({', '.join(KEY_COLUMNS)}, item) VALUES ({marks})"
        if expect is None:
            try:
                self.db.execute(sql, self._row(item))
            except sqlite3.IntegrityError:
                raise ItemExists(f"{item['PK']} {item['SK']}") from None
            return
        # BEGIN IMMEDIATE takes the write lock before reading, so the compare and the write are one step
        # for every process sharing the file.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if not matches(self.get(item["PK"], item["SK"]), expect):
                raise ConditionFailed(f"{item['PK']} {item['SK']}: expected {expect}")
            self.db.execute(sql, self._row(item))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def delete(self, pk: str, sk: str) -> None:
        self.db.execute("DELETE FROM items WHERE PK=? AND SK=?", (pk, sk))

    def put_many(self, items: list[dict]) -> None:
        marks = ", ".join("?" * (len(KEY_COLUMNS) + 1))
        with self.db:  # one transaction, like one BatchWriteItem round trip
            self.db.execute("BEGIN")
            self.db.executemany(
                f"INSERT OR REPLACE INTO items ({', '.join(KEY_COLUMNS)}, item) VALUES ({marks})",
                [self._row(i) for i in items],
            )

    def get(self, pk: str, sk: str) -> dict | None:
        row = self.db.execute("SELECT item FROM items WHERE PK=? AND SK=?", (pk, sk)).fetchone()
        return item_from_wire(json.loads(row[0])) if row else None

    def query(
        self,
        pk_value: str,
        sk_prefix: str | None = None,
        index: str | None = None,
        forward: bool = True,
        type_filter: str | None = None,
    ):
        pk, sk = INDEXES[index]
        sql, args = f"SELECT item FROM items WHERE {pk}=?", [pk_value]
        if sk_prefix:
            sql += f" AND substr({sk}, 1, ?)=?"
            args += [len(sk_prefix), sk_prefix]
        if type_filter:
            sql += " AND TYPE=?"
            args.append(type_filter)
        sql += f" ORDER BY {sk} {'ASC' if forward else 'DESC'}"
        for (text,) in self.db.execute(sql, args):
            yield item_from_wire(json.loads(text))
