"""`--model JOB_OR_DIR`: a best/ folder on disk, or a job (name or id) whose best/ is found
through the job store: the local path in its results, else the S3 prefix in its storage map,
downloaded once into the user cache dir."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("receipt-layoutlm")) / "models"


def resolve_model_dir(ref: str | Path, open_store=None, cache_dir: Path | None = None, aws=None) -> Path:
    """A model directory for `ref`. `open_store()` gives the job store, opened only when ref is not a folder;
    `aws` (AwsSettings) says where S3 is when the job's best/ must be downloaded."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    if open_store is None or str(ref).startswith((".", "/", "~")):
        raise UserError(f"--model {ref}: no such directory; pass a run's best/ folder or a job name or id.")
    store = open_store()
    try:
        job = store.resolve(str(ref))
    except UserError:
        raise UserError(
            f"--model {ref} is neither a model directory nor a job in {store.description}; "
            "pass a best/ folder, or a job name/id from `layoutlm-cli jobs list` (with --job-store if needed)."
        ) from None
    local = (job.results or {}).get("best_dir")
    if local and (Path(local) / "label_map.json").is_file():
        return Path(local)
    storage = job.storage or {}
    if storage.get("bucket") and storage.get("best_prefix"):
        return download_best(job.job_id, job.name, storage, cache_dir or default_cache_dir(), aws)
    raise UserError(
        f"Job {job.name} ({job.job_id}, {job.status}) has no best/ model here or in S3"
        + (f" (its best_dir {local} is gone)" if local else "")
        + "; pass the best/ folder's path instead."
    )


def download_best(job_id: str, job_name: str, storage: dict, cache_dir: Path, aws=None) -> Path:
    """The job's S3 best/ prefix, downloaded once (atomically) into cache_dir/<job id>/best."""
    from ..s3 import S3Sync
    from ..training.artifacts import replace_dir

    target = Path(cache_dir) / job_id / "best"
    if (target / "label_map.json").is_file():
        return target
    s3 = S3Sync(f"s3://{storage['bucket']}", job_name, aws)

    def fill(tmp: Path) -> None:
        if not s3.download_dir(storage["best_prefix"], tmp):
            raise UserError(
                f"s3://{storage['bucket']}/{storage['best_prefix']} is empty; job {job_name} uploaded no best/ model."
            )

    replace_dir(target, fill)
    return target
