"""A training run's files in S3: `<prefix>/<job_name>/{checkpoints,best,logs}/`.

`S3Sync` knows a run's key prefixes (the Job item's `storage` map), checks the bucket before
training starts, and uploads directories with retries. An upload that still fails raises
`UploadError`, a UserError the trainer records on the job instead of losing the run.
`delete_prefix` removes a checkpoint the run pruned locally (--save-total-limit).
"""

from __future__ import annotations

import time
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from .aws import AwsSettings, aws_session, explain
from .errors import UserError

MIB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=8)
UPLOAD_ATTEMPTS = 3  # on top of botocore's own retries: a whole file again after a broken transfer


class UploadError(UserError):
    """An upload to S3 that failed after retries."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix/' -> ('bucket', 'some/prefix'); the prefix has no leading or trailing '/'."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise UserError(f"S3 location {uri!r} must look like s3://BUCKET or s3://BUCKET/PREFIX.")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def _join(*parts: str) -> str:
    """Key prefix from parts, ending with '/', never starting with one."""
    return "".join(f"{p.strip('/')}/" for p in parts if p.strip("/"))


class S3Sync:
    def __init__(self, uri: str, job_name: str, aws: AwsSettings | None = None):
        aws = aws or AwsSettings()
        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.run_root_prefix = _join(self.prefix, job_name)
        self.checkpoints_prefix = self.run_root_prefix + "checkpoints/"
        self.best_prefix = self.run_root_prefix + "best/"
        self.logs_prefix = self.run_root_prefix + "logs/"
        self.endpoint_url = aws.s3_endpoint
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Local servers (moto, MinIO) answer on one host name: path-style keys.
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        self.client = aws_session().client("s3", region_name=aws.region, endpoint_url=self.endpoint_url, config=config)

    @property
    def storage(self) -> dict:
        """The Job item's `storage` map."""
        return {
            "bucket": self.bucket,
            "run_root_prefix": self.run_root_prefix,
            "checkpoints_prefix": self.checkpoints_prefix,
            "best_prefix": self.best_prefix,
            "logs_prefix": self.logs_prefix,
        }

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _explain(self, error: Exception) -> UserError:
        """A failure as one sentence naming the bucket (or endpoint) and the fix."""
        where = f"S3 bucket {self.bucket}"
        code = str(error.response.get("Error", {}).get("Code")) if isinstance(error, ClientError) else ""
        if code in ("404", "NoSuchBucket"):
            return UserError(
                f"{where} does not exist; create it (aws s3 mb s3://{self.bucket}) or fix the bucket name "
                "in the S3 URI."
            )
        known = explain(error, "S3", where, self.client.meta.endpoint_url, "AWS_ENDPOINT_URL_S3")
        return known or UserError(f"{where}: {error}")

    def check(self) -> None:
        """HeadBucket before training, so a bad bucket fails in seconds, not after the first epoch."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e) from None

    def upload_file(self, path: str | Path, key: str) -> int:
        """Upload one file (multipart above 8 MiB); returns its size. Raises UploadError."""
        path = Path(path)
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                self.client.upload_file(str(path), self.bucket, key, Config=TRANSFER)
                return path.stat().st_size
            except (NoCredentialsError, PartialCredentialsError) as e:
                raise UploadError(str(self._explain(e))) from None
            except Exception as e:  # boto3 wraps transfer failures in S3UploadFailedError
                if attempt == UPLOAD_ATTEMPTS:
                    raise UploadError(
                        f"Upload of {path} to {self.url(key)} failed after {UPLOAD_ATTEMPTS} attempts "
                        f"({e}); check the bucket, credentials and network, then retry."
                    ) from None
                time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def upload_dir(self, local_dir: str | Path, key_prefix: str) -> tuple[int, int]:
        """Upload every file under local_dir to key_prefix + relative path; returns (files, bytes)."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise UploadError(f"Cannot upload {local_dir} to {self.url(key_prefix)}: it is not a directory.")
        prefix = _join(key_prefix)
        n_files = total = 0
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            total += self.upload_file(path, prefix + path.relative_to(local_dir).as_posix())
            n_files += 1
        return n_files, total

    def download_dir(self, key_prefix: str, local_dir: str | Path, skip=lambda name: False) -> int:
        """Download every object under key_prefix into local_dir (keeping sub-paths), but those whose file
        name `skip` says; returns the count."""
        local_dir = Path(local_dir)
        prefix = _join(key_prefix)
        count = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if skip(obj["Key"].rsplit("/", 1)[-1]):
                        continue
                    target = local_dir / obj["Key"][len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(self.bucket, obj["Key"], str(target), Config=TRANSFER)
                    count += 1
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e) from None
        return count

    def delete_prefix(self, key_prefix: str) -> int:
        """Delete every object under key_prefix (1000 per request); returns the count. Raises UserError."""
        prefix = _join(key_prefix)
        if not prefix:
            raise ValueError("refusing to delete a whole bucket")
        count = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if not keys:
                    continue
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise UserError(
                        f"S3 refused to delete {self.url(first.get('Key', prefix))} ({first.get('Code')}: "
                        f"{first.get('Message')}); check s3:DeleteObject on the bucket."
                    )
                count += len(keys)
        except (BotoCoreError, ClientError) as e:
            raise self._explain(e) from None
        return count


def read_object(uri: str, flag: str, aws: AwsSettings | None = None) -> bytes:
    """The bytes of s3://bucket/key, given as `flag` (errors name it)."""
    s3 = S3Sync(uri, "", aws)
    try:
        return s3.client.get_object(Bucket=s3.bucket, Key=s3.prefix)["Body"].read()
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404"):
            raise UserError(f"{flag} {uri}: no such object in the bucket; check the key.") from None
        raise s3._explain(e) from None
    except BotoCoreError as e:
        raise s3._explain(e) from None
