"""A sweep reads its data once: the receipts (from a file, a corpus or the DynamoDB table) are written
as our JSONL to the sweep's directory, named by their content hash, and every trial trains on that
file. Trials then see the same receipts even when the table changes during the sweep, the table is
read once instead of once per trial, and the hash in each trial's job_config says which data it saw.

With --output-s3-uri the snapshot is also put at <uri>/<sweep>/data-<hash>.jsonl and trials read it
from there, so workers on other machines find it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import UserError
from ..training.config import DEFAULT_OUTPUT_ROOT, TrainConfig


def sweep_dir(base: dict, name: str) -> Path:
    """Where a sweep keeps its snapshot: beside its trials' output dirs."""
    return Path(base.get("output_dir") or DEFAULT_OUTPUT_ROOT).expanduser() / name


def source_of(base: dict) -> str:
    return base["dataset"] if base.get("dataset") else f"dynamodb://{base['dynamo_table']}"


def take_snapshot(base: dict, name: str, aws=None, say=print) -> dict:
    """Read the command line's data once and write it to the sweep's directory (and S3). Returns the record
    kept in every trial's sweep tag: source, dataset (what trials read), sha256, receipts, dropped."""
    from ..sources.jsonl import jsonl_text
    from ..training.artifacts import atomic_write_text
    from ..training.data import load_source

    cfg = TrainConfig(**{**base, "job_name": name})  # the command line's settings, defaults filled in
    receipts, report = load_source(cfg.dataset, cfg.dynamo_table, cfg.label_status, cfg.seed, aws)
    if not receipts:
        raise UserError(f"The dataset {report.source} holds no receipt with words; check the file or table.")
    text = jsonl_text(receipts)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = sweep_dir(base, name) / f"data-{sha[:12]}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    dataset = str(path)
    if cfg.output_s3_uri:
        from ..s3 import S3Sync

        s3 = S3Sync(cfg.output_s3_uri, name, aws)
        key = s3.run_root_prefix + path.name
        s3.upload_file(path, key)
        dataset = s3.url(key)
    say(f"data: {len(receipts)} receipts from {source_of(base)}, snapshot {dataset} (sha256 {sha[:12]})")
    return {
        "source": source_of(base),
        "dataset": dataset,
        "sha256": sha,
        "receipts": len(receipts),
        "dropped": dict(report.dropped),
    }


def check_snapshot(data: dict, base: dict, name: str, aws=None, say=print) -> dict:
    """A continued sweep's recorded snapshot; taken again if its local file is gone, which must give the
    same receipts (else the new trials would not be comparable with the recorded ones)."""
    if data["dataset"].startswith("s3://") or Path(data["dataset"]).is_file():
        return data
    say(f"data snapshot {data['dataset']} is gone; reading {data['source']} again")
    again = take_snapshot(base, name, aws, say)
    if again["sha256"] != data["sha256"]:
        raise UserError(
            f"Sweep {name!r} trained on a snapshot of {data['source']} (sha256 {data['sha256'][:12]}) that is gone, "
            f"and the data now differs (sha256 {again['sha256'][:12]}); start a new sweep with another --name."
        )
    return again
