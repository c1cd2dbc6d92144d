"""Loading training receipts from DynamoDB: the bounded thread pool against one query at a time.

Starts its own DynamoDB Local (in memory, 127.0.0.1; found as the tests find it, tests/aws_servers.py),
creates a receipts table, imports N seeded demo receipts (`demo:N`) with
receipt_layoutlm.sources.dynamodb.import_receipts, then times two loaders of the same data:

  sequential  the loader's own steps in a plain loop: the GSI3 `VALIDATION_STATUS#VALID`
              query (all pages), then per receipt its Receipt item (GetItem) and its words
              (GSI3 query), one request in flight at a time
  pool        receipt_layoutlm.sources.dynamodb.load_dynamo_receipts(max_workers=--workers)

Both issue the same requests; the script asserts that they return identical receipts (and
drop counts), and prints receipts/s of each and their ratio. Each arm runs --repeats times,
alternating, after one untimed warm-up pass (DynamoDB Local is a JVM: its first pass is slow);
the best time of each arm is reported.

    python bench/dynamo_load.py [--receipts 2000] [--workers 8] [--repeats 2] [--rtt-ms 0]

Note: against DynamoDB Local on the same machine nothing waits on a network: the client's
CPU (botocore parsing the items, under the GIL) and the server's share the cores, so the
ratio is a floor. Against AWS each request also waits a round trip, which the pool
overlaps; --rtt-ms adds such a wait (a sleep before each request is sent, during loading
only) to see that effect.
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
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import aws_servers  # noqa: E402  (tests/aws_servers.py: finds and starts DynamoDB Local)


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


def load_sequential(table_name: str, aws, statuses=("VALID",)):
    """The same requests as load_dynamo_receipts, strictly one after another."""
    from receipt_layoutlm.sources import LoadReport
    from receipt_layoutlm.sources.dynamodb import _collect_labels, _load_receipt
    from receipt_layoutlm.store.dynamodb import DynamoTable

    table = DynamoTable(table_name, aws)
    report = LoadReport(source=f"{table.description} ({'/'.join(statuses)} labels)")
    receipts = []
    for labels in _collect_labels(table, statuses).values():
        receipt, drops = _load_receipt(table, labels, statuses)
        for reason, n in drops.items():
            report.drop(reason, n)
        if receipt is not None:
            receipts.append(receipt)
    receipts.sort(key=lambda r: r.id)
    return receipts, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=2000, help="demo receipts to import (default 2000)")
    parser.add_argument("--workers", type=int, default=8, help="thread pool size of the pooled loader (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per arm; the best is kept (default 2)")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="simulated network round trip added to each request while loading (default 0)",
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
        RTT["seconds"] = args.rtt_ms / 1000
        arms = {
            "sequential": lambda: load_sequential(table, aws),
            f"pool ({args.workers} workers)": lambda: load_dynamo_receipts(table, aws, max_workers=args.workers),
        }
        reference = load_sequential(table, aws)  # warm-up pass, untimed; also the reference result
        n = len(reference[0])
        best = {name: float("inf") for name in arms}
        for _ in range(max(1, args.repeats)):
            for name, load in arms.items():
                t0 = time.perf_counter()
                got, report = load()
                elapsed = time.perf_counter() - t0
                assert got == reference[0], f"{name}: receipts differ from the sequential loader's"
                assert report.dropped == reference[1].dropped, f"{name}: drop counts differ"
                best[name] = min(best[name], elapsed)
        requests = 2 * n + 1  # GetItem + word query per receipt, plus the label query's first page
        print(
            f"loaded {n} receipts ({sum(len(r.words) for r in reference[0])} words, >= {requests} requests), "
            f"identical from both loaders; simulated RTT {args.rtt_ms:g} ms; best of {args.repeats}:"
        )
        for name, seconds in best.items():
            print(f"  {name:<20} {seconds:7.2f} s  {n / seconds:8.1f} receipts/s")
        (seq, pool) = best.values()
        print(f"  ratio pool/sequential: {seq / pool:.2f}x")
        print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    finally:
        aws_servers.stop(proc)


if __name__ == "__main__":
    main()
