"""A real S3-compatible server for the tests: moto's server mode (`moto[server]`, a dev dependency) in a subprocess
on a free loopback port, never any other address. Each test gets a bucket of its own."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sqd.embedded_redis import free_port
from sqd.settings import ArtifactSettings

ACCESS_KEY, SECRET_KEY = "sqd-test-key", "sqd-test-secret"  # moto accepts any; they travel as real settings do


@dataclass
class MotoServer:
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                          str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"sqd-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self) -> ArtifactSettings:
        return ArtifactSettings(endpoint_url=self.endpoint, access_key_id=ACCESS_KEY,
                                secret_access_key=SECRET_KEY, region="us-east-1")

    def env(self) -> dict[str, str]:
        """The SQD_ARTIFACTS__* variables a process needs to reach this server (as a deployment sets them)."""
        return self.settings().env()
