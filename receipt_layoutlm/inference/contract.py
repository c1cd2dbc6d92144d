"""The evaluation contract between runs: which receipts a job was validated on, and whether two
or more jobs' scores can be compared at all, from the job_config alone. `jobs show` prints it.
(`jobs compare` fingerprints the validation ids in each run.json instead: compare.validation_fingerprint.)"""

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


def validation_mismatch(jobs) -> str | None:
    """None when every job was validated on the same receipts; else one sentence naming how they differ."""
    seen: dict[str, list[str]] = {}
    for job in jobs:
        seen.setdefault(describe_validation(job), []).append(job.name)
    if len(seen) < 2:
        return None
    parts = "; ".join(f"{', '.join(names)}: {how}" for how, names in seen.items())
    return (
        f"These runs were validated on different receipts ({parts}), so their scores are not comparable; "
        "train them with the same --val-keys to compare."
    )
