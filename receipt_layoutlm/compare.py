"""`jobs compare`: several jobs side by side: the settings that differ, best F1, per-label F1 at the best
evaluation, epochs to best, runtime, and whether they were validated on the same receipts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .inference.contract import describe_validation

# job_config entries that differ between any two runs without being a difference of recipe.
NOT_SETTINGS = {"job_name", "output_dir", "environment", "resume", "sweep", "description"}


def validation_fingerprint(job) -> str | None:
    """A short hash of the receipts the job was validated on, or None when nothing says.

    Read from job_config["val_keys_sha256"] where the run recorded one, else from the split in the run.json
    of its output dir (val_receipt_ids, sorted)."""
    cfg = job.job_config or {}
    if cfg.get("val_keys_sha256"):
        return str(cfg["val_keys_sha256"])[:12]
    run_json = Path(str(cfg.get("output_dir") or "")) / "run.json"
    try:
        ids = json.loads(run_json.read_text())["split"]["val_receipt_ids"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:12]


def per_label_f1(metrics: list[dict], results: dict) -> dict[str, float]:
    """label_<TYPE>_f1 of the best evaluation (its step, else its epoch)."""
    step, epoch = results.get("best_step"), results.get("best_epoch")
    out = {}
    for m in metrics:
        name = m["metric_name"]
        if not (name.startswith("label_") and name.endswith("_f1")):
            continue
        if (step is not None and m.get("step") == step) or (step is None and m.get("epoch") == epoch):
            out[name[len("label_") : -len("_f1")]] = float(m["value"])
    return out


def compare_jobs(store, jobs: list) -> dict:
    keys = sorted({k for j in jobs for k in (j.job_config or {})} - NOT_SETTINGS)
    differences = {}
    for k in keys:
        values = [(j.job_config or {}).get(k) for j in jobs]
        if any(v != values[0] for v in values[1:]):
            differences[k] = values
    rows = []
    for j in jobs:
        r = j.results or {}
        rows.append(
            {
                "job_id": j.job_id,
                "name": j.name,
                "status": j.status,
                "best_f1": r.get("best_f1"),
                "best_epoch": r.get("best_epoch"),
                "epochs_completed": r.get("epochs_completed"),
                "train_runtime": r.get("train_runtime"),
                "per_label_f1": per_label_f1(store.metrics(j.job_id), r) if r else {},
                "validation_fingerprint": validation_fingerprint(j),
                "validation": describe_validation(j),
            }
        )
    prints = [r["validation_fingerprint"] for r in rows]
    if None not in prints:
        same = len(set(prints)) == 1  # the receipts themselves
    elif len({r["validation"] for r in rows}) == 1:
        same = None  # the same split settings, but without every job's receipt ids nobody can tell
    else:
        same = False  # split by other settings (data, rule, seed, ratio or keys)
    return {"jobs": rows, "differences": differences, "same_validation": same}
