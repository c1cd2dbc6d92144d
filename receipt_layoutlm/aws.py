"""AWS settings, the shared boto3 session, and AWS failures explained in one sentence.

`AwsSettings` (region and endpoints) is resolved once at the CLI boundary
(`AwsSettings.resolve`) and then passed as an argument to everything that talks to
DynamoDB or S3; nothing writes these settings into `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import boto3
import botocore.loaders
import botocore.session
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import UserError

DEFAULT_REGION = "us-east-1"
AUTH_ERRORS = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "MissingAuthenticationTokenException",
    "403",
}


@dataclass(frozen=True)
class AwsSettings:
    """Where DynamoDB and S3 are: the region, and endpoints for local servers (None = AWS's own)."""

    region: str = DEFAULT_REGION
    dynamodb_endpoint: str | None = None
    s3_endpoint: str | None = None

    @classmethod
    def resolve(
        cls, region: str | None = None, dynamodb_endpoint: str | None = None, environ: Mapping[str, str] = os.environ
    ) -> AwsSettings:
        """The settings of a command: its flags, else the environment, else the AWS profile, else defaults.

        The S3 endpoint comes from AWS_ENDPOINT_URL_S3 (the variable the AWS CLI reads too).
        """
        return cls(
            region=resolve_region(region, environ),
            dynamodb_endpoint=dynamodb_endpoint or environ.get("DYNAMODB_ENDPOINT_URL") or None,
            s3_endpoint=environ.get("AWS_ENDPOINT_URL_S3") or None,
        )


def resolve_region(flag: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """--region, then AWS_REGION, then AWS_DEFAULT_REGION, then the AWS profile's region, then us-east-1."""
    return flag or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or _profile_region() or DEFAULT_REGION


def _profile_region() -> str | None:
    try:
        return aws_session().region_name
    except Exception:  # a broken ~/.aws/config must not stop commands that pass --region
        return None


_loader = botocore.loaders.create_loader()


def aws_session() -> boto3.session.Session:
    """A fresh session (credentials are looked up anew) sharing one loader, which caches the
    parsed service models: a new client then costs milliseconds instead of a few hundred."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=session)


def explain(error: Exception, service: str, what: str, endpoint: str, endpoint_hint: str) -> UserError | None:
    """The failures DynamoDB and S3 share, as one sentence naming `what` (e.g. "DynamoDB table T")
    and the fix; None when the caller must explain it (service-specific codes) or re-raise.

    service: "DynamoDB" or "S3"; endpoint_hint: the flag or variable that sets the endpoint.
    """
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return UserError(
            f"No AWS credentials found for {what}; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
        )
    if isinstance(error, BotoConnectionError):
        return UserError(
            f"Cannot reach the {service} endpoint {endpoint} for {what}; check {endpoint_hint} and the network."
        )
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in AUTH_ERRORS:
            return UserError(
                f"AWS refused access to {what} ({code}); check that the credentials (AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID) are valid and allowed to use it."
            )
        # botocore falls back to the bare HTTP status when the answer is not the service's own
        # error format: some other web server answers at that address.
        if code.isdigit() and (service != "S3" or status in (405, 501)):
            return UserError(
                f"The endpoint {endpoint} answered HTTP {status} but is not {service} ({what}); check {endpoint_hint}."
            )
    return None
