"""The evaluation contract between runs: what decided the receipts a job was validated on, from its
job_config alone. `jobs show` prints it; `jobs compare` compares the receipt ids themselves where it
can (compare.validation_fingerprint) and these settings where it cannot."""

from __future__ import annotations


def validation_of(job) -> dict:
    """What decided a job's validation receipts, from its job_config: the --val-keys hash when keys
    pinned them, else the data, the split rule, its seed and ratio."""
    cfg = job.job_config or {}
    if cfg.get("val_keys_sha256"):
        return {"val_keys_sha256": cfg["val_keys_sha256"]}
    return {
        "data": cfg.get("dataset") or f"dynamodb:{cfg.get('dynamo_table')}",
        "split_by": cfg.get("split_by", "receipt"),
        "seed": cfg.get("seed"),
        "val_ratio": cfg.get("val_ratio"),
    }


def describe_validation(job) -> str:
    v = validation_of(job)
    if "val_keys_sha256" in v:
        return f"--val-keys sha256 {v['val_keys_sha256'][:12]}"
    return f"{v['split_by']} split of {v['data']}, seed {v['seed']}, val_ratio {v['val_ratio']}"
