"""The write-ahead journal of a run whose job store stopped answering.

While the store is unavailable (StoreUnavailable: no answer, throttled or locked after retries), a
training run appends each write it could not make to <output-dir>/journal.jsonl instead of
stopping: one JSON line per item, in wire format (wire.py), fsync'd. The items are built by JobStore
before they are journaled, so each keeps its key (the keys embed timestamps): replaying a line that
did reach the store overwrites that item with itself, never adds a second one.

`flush` replays the lines in order. JobMetric/JobLog items are plain puts. A Job item (with the
JobStatus row of its status change) is fenced: it is written only while the stored Job still has the
attempt number it was journaled with and the status this run last wrote (or the journaled status
itself, when it already got through), so a job that another process moved on meanwhile (claimed
again, requeued, cancelled) is not set back; such a line is dropped, with its JobStatus row, and
counted. The journal is flushed by the run itself as soon as the store answers again, at the start
of the job's next run in that output dir, by the worker when the run's process ends, and by
`layoutlm-cli jobs flush-journal DIR`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .table import ConditionFailed
from .wire import item_from_wire, item_to_wire

JOURNAL_FILE = "journal.jsonl"
BATCH = 100  # items per put_many when flushing


@dataclass
class Flushed:
    written: int = 0  # lines replayed into the store
    dropped: int = 0  # Job lines not written: the job was moved on by another process


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of(cls, output_dir: Path) -> Journal:
        return cls(Path(output_dir) / JOURNAL_FILE)

    @property
    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def append(self, entries: list[dict]) -> None:
        """entries: {"item": item}, or {"job": Job item, "expect_status": the status this run last wrote,
        "status_row": its JobStatus item or None}."""
        lines = "".join(json.dumps(_to_line(e), ensure_ascii=False) + "\n" for e in entries)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(_from_line(json.loads(line)))
            except (ValueError, KeyError):
                continue  # a line torn by a kill mid-append: it was never acknowledged as written
        return entries

    def _keep(self, entries: list[dict]) -> None:
        """Replace the journal with entries (atomically: a kill leaves the old or the new one)."""
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(_to_line(e), ensure_ascii=False) + "\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def flush(self, store) -> Flushed:
        """Replay the journal into store (a JobStore), oldest first; what is written leaves the journal.
        Raises StoreUnavailable when the store fails again, keeping the lines not yet written."""
        from .table import StoreUnavailable

        entries, result, i = self.entries(), Flushed(), 0
        while i < len(entries):
            entry = entries[i]
            try:
                if "job" in entry:
                    if replay_job(store, entry["job"], entry.get("expect_status")):
                        if entry.get("status_row"):
                            store.table.put(entry["status_row"])
                        result.written += 1
                    else:
                        result.dropped += 1  # and its JobStatus row: the history shows what the Job went through
                    i += 1
                    continue
                # A run of metric/log items up to the next Job line: one batch (their order among
                # themselves does not matter, each has its own key).
                end = i
                while end < len(entries) and "job" not in entries[end] and end - i < BATCH:
                    end += 1
                store.table.put_many([e["item"] for e in entries[i:end]])
                result.written += end - i
                i = end
            except StoreUnavailable:
                self._keep(entries[i:])
                raise
        self._keep([])
        return result


def replay_job(store, item: dict, expect_status: str | None) -> bool:
    """Write a journaled Job item unless the stored Job was moved on by another process; the stored
    cancel request is kept. Returns whether it was written."""
    for _ in range(3):
        stored = store.table.get(item["PK"], item["SK"])
        if stored is None or stored.get("attempts") != item.get("attempts"):
            return False  # gone, or claimed again by another worker: that run owns it now
        if stored["status"] not in (expect_status, item["status"]):
            return False  # requeued, cancelled or failed by someone else meanwhile
        merged = dict(item)
        if stored.get("cancel_requested"):
            merged["cancel_requested"] = True
        expect = {
            "attempts": stored.get("attempts"),
            "status": stored["status"],
            "cancel_requested": stored.get("cancel_requested"),
        }
        try:
            store.table.put(merged, expect=expect)
            return True
        except ConditionFailed:
            continue  # changed between the read and the write: look again
    return False


ITEM_KEYS = ("item", "job", "status_row")


def _to_line(entry: dict) -> dict:
    return {k: item_to_wire(v) if k in ITEM_KEYS and v else v for k, v in entry.items()}


def _from_line(line: dict) -> dict:
    if "item" not in line and "job" not in line:
        raise KeyError("item")
    return {k: item_from_wire(v) if k in ITEM_KEYS and v else v for k, v in line.items()}
