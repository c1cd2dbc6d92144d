"""What the EC2 instance metadata service (IMDSv2) says about this machine, and spot interruption notices.

Off EC2 nothing answers: every call gives up after `timeout` (1 s) and the worker describes itself by
its host name. Tests point `endpoint` at a fake server on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_ENDPOINT = "http://169.254.169.254"


@dataclass
class InstanceInfo:
    instance_id: str
    instance_type: str = "unknown"
    availability_zone: str = "unknown"
    ip_address: str = ""
    is_spot: bool = False
    on_ec2: bool = False


class Imds:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 1.0):
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    def _token_header(self) -> dict:
        if self._token is None:
            request = urllib.request.Request(
                f"{self.endpoint}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
            )
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                self._token = response.read().decode()
        return {"X-aws-ec2-metadata-token": self._token}

    def get(self, path: str) -> str | None:
        """The text at latest/meta-data/<path>; None when it is absent (404) or IMDS does not answer."""
        try:
            request = urllib.request.Request(f"{self.endpoint}/latest/meta-data/{path}", headers=self._token_header())
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode()
        except urllib.error.HTTPError as e:
            if e.code == 401:
                self._token = None  # expired: fetch a new one next time
            return None
        except (OSError, ValueError):
            return None

    def describe(self) -> InstanceInfo:
        instance_id = self.get("instance-id")
        if instance_id is None:
            host = socket.gethostname()
            try:
                ip = socket.gethostbyname(host)
            except OSError:
                ip = ""
            return InstanceInfo(instance_id=host, ip_address=ip)
        return InstanceInfo(
            instance_id=instance_id,
            instance_type=self.get("instance-type") or "unknown",
            availability_zone=self.get("placement/availability-zone") or "unknown",
            ip_address=self.get("local-ipv4") or "",
            is_spot=self.get("instance-life-cycle") == "spot",
            on_ec2=True,
        )

    def spot_interruption(self) -> dict | None:
        """The 2-minute warning ({"action": "terminate", "time": ...}) once AWS has sent it, else None."""
        text = self.get("spot/instance-action")
        if not text:
            return None
        try:
            notice = json.loads(text)
        except ValueError:
            return {"action": text}
        return notice if isinstance(notice, dict) else {"action": str(notice)}
