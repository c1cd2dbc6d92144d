"""Loading training receipts from DynamoDB: the loader against the old loader's requests sent one at a time.

Starts its own DynamoDB Local (in memory, 127.0.0.1; found as the tests find it, tests/aws_servers.py),
creates a receipts table, imports N seeded demo receipts (`demo:N`) with
receipt_layoutlm.sources.dynamodb.import_receipts, then times two loaders of the same data:

  sequential  the loader as it was before it used GSI4 (kept verbatim below, the baseline): the GSI3
              `VALIDATION_STATUS#VALID` query (all pages), then per receipt its Receipt item (GetItem)
              and its words (GSI3 query), one request in flight at a time, every item decoded whole
  loader      receipt_layoutlm.sources.dynamodb.load_dynamo_receipts(max_workers=--workers): one GSI4
              query per receipt with projections, items read from the JSON body, on a thread pool

The script asserts that they return identical receipts (and drop counts), and prints receipts/s
of each and their ratio. Each arm runs --repeats times, alternating, after one untimed warm-up
pass of each (DynamoDB Local is a JVM: its first pass is slow); the best time of each arm is
reported.

    python bench/dynamo_load.py [--receipts 2000] [--workers 8] [--repeats 2] [--rtt-ms 0 [20 ...]]

Note: against DynamoDB Local on the same machine nothing waits on a network: the client's
CPU (parsing the items, under the GIL) and the server's share the cores. Against AWS each
request also waits a round trip, which the pool overlaps; --rtt-ms adds such a wait (a sleep
before each request is sent, during loading only) to see that effect.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import aws_servers  # noqa: E402  (tests/aws_servers.py: finds and starts DynamoDB Local)

from receipt_layoutlm.sources import Receipt, Word  # noqa: E402
from receipt_layoutlm.sources.dynamodb import canonical_label, pick_label, receipt_key  # noqa: E402
from receipt_layoutlm.store.dynamodb import DynamoTable  # noqa: E402


def start_dynamodb_local() -> tuple[subprocess.Popen, str]:
    """DynamoDB Local in memory on 127.0.0.1, as tests/aws_servers.py starts it but with the JVM's full
    JIT: the tests favour a fast start, a benchmark a sustained load (imports run about twice as fast)."""
    java = shutil.which("java")
    if java is None:
        raise SystemExit("`java` not found on PATH; DynamoDB Local needs a Java 17+ runtime.")
    folder, port = aws_servers.find_dynamodb_local(), aws_servers.free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server, closed with it
    proc = subprocess.Popen(
        [
            java,
            "-XX:+UseSerialGC",
            "-Djava.library.path=./DynamoDBLocal_lib",
            "-jar",
            "DynamoDBLocal.jar",
            "-inMemory",
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            str(port),
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        aws_servers.wait_for_port(port, 60, proc, log)
    except Exception:
        aws_servers.stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


def isolate_from_aws(endpoint: str, scratch: Path) -> None:
    """Fake credentials only (as the tests' aws_env fixture does); the endpoint is passed as AwsSettings."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
    ):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "none"),
        AWS_CONFIG_FILE=str(scratch / "none"),
    )


RTT = {"seconds": 0.0}  # simulated network round trip per request (--rtt-ms), set after the import


def _wait_rtt(**kwargs) -> None:
    if RTT["seconds"]:
        time.sleep(RTT["seconds"])  # sleeping releases the GIL, as waiting on a socket does


def add_rtt_hook() -> None:
    """Every DynamoDB client the loaders make waits RTT before sending each request."""
    from receipt_layoutlm.store import dynamodb

    make_client = dynamodb.make_client

    def with_rtt(aws):
        client = make_client(aws)
        client.meta.events.register("before-send.dynamodb", _wait_rtt)
        return client

    dynamodb.make_client = with_rtt


# --- the baseline: the loader as it was before GSI4/projections/direct parsing (2026-11-25), kept
# verbatim (only names prefixed) so the ratio always compares against the same sequential requests.


def load_sequential(table_name: str, aws, statuses=("VALID",)):
    """The old loader's requests, strictly one after another: the GSI3 label query (all pages), then per
    receipt GetItem + GSI3 word query, every item through the generic wire decoder."""
    from receipt_layoutlm.sources import LoadReport

    table = DynamoTable(table_name, aws)
    statuses = tuple(s.strip().upper() for s in statuses)
    report = LoadReport(source=f"{table.description} ({'/'.join(statuses)} labels)")
    receipts = []
    for labels in _old_collect_labels(table, statuses).values():
        receipt, drops = _old_load_receipt(table, labels, statuses)
        for reason, n in drops.items():
            report.drop(reason, n)
        if receipt is not None:
            receipts.append(receipt)
    receipts.sort(key=lambda r: r.id)
    return receipts, report


@dataclass
class _old_Labels:
    """VALID (or other wanted) labels of one receipt, by (line id, word id)."""

    image_id: str
    receipt_number: int
    by_word: dict[tuple[int, int], set[str]] = field(default_factory=dict)


def _old_parse_sk(sk: str) -> dict[str, str]:
    """'RECEIPT#00001#LINE#00002#WORD#00003#LABEL#DATE' -> {'RECEIPT': '00001', 'LINE': ..., 'LABEL': 'DATE'}"""
    parts = sk.split("#")
    return dict(zip(parts[0::2], parts[1::2], strict=False))


def _old_collect_labels(table: DynamoTable, statuses: tuple[str, ...]) -> dict[tuple[str, int], _old_Labels]:
    wanted: dict[tuple[str, int], _old_Labels] = {}
    for status in statuses:
        for item in table.query(f"VALIDATION_STATUS#{status}", index="GSI3"):
            if item.get("TYPE") != "RECEIPT_WORD_LABEL":
                continue
            image_id = item["PK"].removeprefix("IMAGE#")
            parts = _old_parse_sk(item["SK"])
            key = (image_id, int(parts["RECEIPT"]))
            labels = wanted.setdefault(key, _old_Labels(image_id, key[1]))
            word = (int(parts["LINE"]), int(parts["WORD"]))
            labels.by_word.setdefault(word, set()).add(canonical_label(item["SK"].split("#LABEL#", 1)[1]))
    return wanted


def _old_load_receipt(
    table: DynamoTable, labels: _old_Labels, statuses: tuple[str, ...]
) -> tuple[Receipt | None, dict]:
    """One receipt's page size and words (runs in a worker thread; returns its drop counts)."""
    drops: dict[str, int] = {}

    def drop(reason: str, n: int = 1) -> None:
        drops[reason] = drops.get(reason, 0) + n

    iid, r = labels.image_id, labels.receipt_number
    receipt_item = table.get(f"IMAGE#{iid}", f"RECEIPT#{r:05d}")
    width, height = (receipt_item or {}).get("width"), (receipt_item or {}).get("height")
    if not receipt_item or not width or not height or width <= 0 or height <= 0:
        drop("labelled receipt without a Receipt item with width and height")
        return None, drops
    found: list[tuple[int, int, Word]] = []
    for item in table.query(f"IMAGE#{iid}#RECEIPT#{r:05d}", "WORD", index="GSI3"):
        if item.get("TYPE") != "RECEIPT_WORD":
            continue
        parts = _old_parse_sk(item["SK"])
        line_id, word_id = int(parts["LINE"]), int(parts["WORD"])
        names = labels.by_word.pop((line_id, word_id), set())
        text = (item.get("text") or "").strip()
        box = _old_page_box(item, width, height)
        if not text or box is None:
            drop("word with empty text" if not text else "word without corner points")
            continue
        label = _old_word_label(names, statuses, drop)
        found.append((line_id, word_id, Word(text=text, box=box, line=line_id, label=label)))
    if labels.by_word:
        drop("label whose word is missing", sum(len(v) for v in labels.by_word.values()))
    if not found:
        drop("labelled receipt with no words")
        return None, drops
    found.sort(key=lambda f: (f[0], f[2].box[0], f[1]))
    receipt = Receipt(
        id=receipt_key(iid, r),
        width=width,
        height=height,
        words=[w for _, _, w in found],
        extra={"source": table.description},
    )
    return receipt, drops


def _old_word_label(names: set[str], statuses: tuple[str, ...], drop) -> str:
    if not names:
        return "O"
    label = pick_label(names)
    if len(names) > 1:
        others = ", ".join(sorted(names - {label}))
        drop(f"word with several {'/'.join(statuses)} labels: kept {label} over {others}")
    return label


def _old_page_box(item: dict, width: float, height: float) -> tuple[float, float, float, float] | None:
    """Corners (0-1, origin bottom-left, y up) -> [x0, y0, x1, y1] in page units, origin top-left."""
    corners = [item.get(k) for k in ("top_left", "top_right", "bottom_left", "bottom_right")]
    if all(isinstance(c, dict) and "x" in c and "y" in c for c in corners):
        xs, ys = [float(c["x"]) for c in corners], [float(c["y"]) for c in corners]
    elif isinstance(item.get("bounding_box"), dict):  # older items: {x, y (bottom), width, height}
        b = item["bounding_box"]
        xs, ys = [b["x"], b["x"] + b["width"]], [b["y"], b["y"] + b["height"]]
    else:
        return None
    clamp = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    x0, x1 = clamp(min(xs)) * width, clamp(max(xs)) * width
    y0, y1 = (1 - clamp(max(ys))) * height, (1 - clamp(min(ys))) * height
    # 1e-4 page units is far below a pixel and keeps float noise (66.99999999999997) out of files.
    return (_old_tidy(x0, width), _old_tidy(y0, height), _old_tidy(x1, width), _old_tidy(y1, height))


def _old_tidy(value: float, limit: float) -> float:
    return min(float(limit), round(value, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=2000, help="demo receipts to import (default 2000)")
    parser.add_argument("--workers", type=int, default=8, help="the loader's thread pool size (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per arm; the best is kept (default 2)")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        nargs="+",
        default=[0.0],
        help="simulated network round trip(s) added to each request while loading; each value is a "
        "measurement of both arms (default 0)",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="dynamo-load-bench-"))
    proc, endpoint = start_dynamodb_local()
    try:
        isolate_from_aws(endpoint, scratch)
        from receipt_layoutlm.aws import AwsSettings
        from receipt_layoutlm.sources import load_receipts
        from receipt_layoutlm.sources.dynamodb import import_receipts, load_dynamo_receipts
        from receipt_layoutlm.store.dynamodb import create_table

        aws = AwsSettings(region="us-east-1", dynamodb_endpoint=endpoint)
        table = f"bench-{uuid.uuid4().hex[:8]}"
        create_table(table, aws)
        receipts, _ = load_receipts(f"demo:{args.receipts}")
        t0 = time.perf_counter()
        counts = import_receipts(receipts, table, aws)
        import_s = time.perf_counter() - t0
        items = sum(counts.values())
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; python {platform.python_version()}; "
            f"DynamoDB Local at {endpoint}"
        )
        print(
            f"imported demo:{args.receipts}: {counts['receipts']} receipts, {counts['lines']} lines, "
            f"{counts['words']} words, {counts['labels']} labels = {items} items in {import_s:.1f} s "
            f"({items / import_s:.0f} items/s)"
        )

        add_rtt_hook()
        arms = {
            "sequential": lambda: load_sequential(table, aws),
            f"loader ({args.workers} workers)": lambda: load_dynamo_receipts(table, aws, max_workers=args.workers),
        }
        reference = load_sequential(table, aws)  # warm-up passes, untimed; also the reference result
        load_dynamo_receipts(table, aws, max_workers=args.workers)
        n = len(reference[0])
        print(
            f"loading {n} receipts ({sum(len(r.words) for r in reference[0])} words; requests besides the label "
            f"query's pages: sequential {2 * n} (GetItem + GSI3 words each), loader {n} (GSI4)); best of "
            f"{args.repeats}; both loaders' receipts and drop counts asserted identical:"
        )
        for rtt_ms in args.rtt_ms:
            RTT["seconds"] = rtt_ms / 1000
            best = {name: float("inf") for name in arms}
            for _ in range(max(1, args.repeats)):
                for name, load in arms.items():
                    t0 = time.perf_counter()
                    got, report = load()
                    elapsed = time.perf_counter() - t0
                    assert got == reference[0], f"{name}: receipts differ from the sequential loader's"
                    assert report.dropped == reference[1].dropped, f"{name}: drop counts differ"
                    best[name] = min(best[name], elapsed)
            print(f"simulated RTT {rtt_ms:g} ms:")
            for name, seconds in best.items():
                print(f"  {name:<20} {seconds:7.2f} s  {n / seconds:8.1f} receipts/s")
            (seq, loader) = best.values()
            print(f"  ratio loader/sequential: {seq / loader:.2f}x", flush=True)
        print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    finally:
        aws_servers.stop(proc)


if __name__ == "__main__":
    main()
