"""Where published issuer documents are written and read back: a directory or S3
(docs/endpoints.md#published-issuer-url).

``JWTEX_PUBLISH_TARGET`` names one target for the whole deployment — ``file:///srv/issuers`` or
``s3://bucket/prefix`` — and each tenant's documents go beneath it, in the folder its published
URL's path names. The target is the operator's, not a tenant's: jwtex writes there with the
deployment's own permissions (a filesystem, AWS credentials from the standard chain), and a tenant
that could choose the bucket or the directory could write over another tenant's documents.

A directory is written atomically (a temporary file renamed over the old one), so a web server
never serves half a document. S3 gets ``Content-Type`` and ``Cache-Control`` on every object and no
ACL: buckets with Object Ownership "bucket owner enforced" (AWS's default since April 2023) refuse
ACLs, and the documents are made readable by the bucket policy or a CloudFront origin access control.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from ..core.publication import CACHE_CONTROL, CONTENT_TYPE


class PublishError(Exception):
    """A write or read-back failed; the message is safe to show operators (no credentials)."""


@dataclass(frozen=True)
class ReadBack:
    body: bytes | None  # None: not there
    content_type: str | None = None
    cache_control: str | None = None


class PublishTarget(Protocol):
    description: str

    def put(self, path: str, body: bytes) -> None: ...

    def get(self, path: str) -> ReadBack: ...


@dataclass(frozen=True)
class DirectoryTarget:
    """Files beneath ``root``, for any static web server (whose content type for the extension-less
    ``openid-configuration`` the operator sets: README, "Published issuer documents")."""

    root: Path

    @property
    def description(self) -> str:
        return f"file://{self.root}"

    def _file(self, path: str) -> Path:
        return self.root / path

    def put(self, path: str, body: bytes) -> None:
        target = self._file(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".jwtex-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(body)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temporary, 0o644)  # public documents, served by a web server
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise PublishError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def get(self, path: str) -> ReadBack:
        try:
            return ReadBack(self._file(path).read_bytes(), CONTENT_TYPE, CACHE_CONTROL)
        except FileNotFoundError:
            return ReadBack(None)
        except OSError as exc:
            raise PublishError(f"cannot read {self._file(path)}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class S3Target:
    """Objects beneath ``s3://bucket/prefix``, through boto3 and the standard AWS chain
    (credentials, region, ``AWS_ENDPOINT_URL_S3``)."""

    bucket: str
    prefix: str

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    @cached_property
    def _client(self):
        """One client per publish (a target is made per attempt): credentials are resolved afresh
        each time, as after a rotation of the role's."""
        import boto3
        from botocore.config import Config

        # Bounded like the KMS calls (docs/design/key-lifecycle.md#aws-kms): a publish is retried
        # with back-off by the sweep, never waited for by an exchange.
        return boto3.session.Session().client(
            "s3", config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
        )

    def put(self, path: str, body: bytes) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(path), Body=body, ContentType=CONTENT_TYPE, CacheControl=CACHE_CONTROL
            )
        except Exception as exc:  # botocore's errors, no credentials, an unreachable endpoint
            raise PublishError(f"S3 PutObject s3://{self.bucket}/{self._key(path)} failed: {_aws_error(exc)}") from exc

    def get(self, path: str) -> ReadBack:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._key(path))
            return ReadBack(answer["Body"].read(), answer.get("ContentType"), answer.get("CacheControl"))
        except Exception as exc:
            if _aws_code(exc) in {"NoSuchKey", "404"}:
                return ReadBack(None)
            raise PublishError(f"S3 GetObject s3://{self.bucket}/{self._key(path)} failed: {_aws_error(exc)}") from exc


def _aws_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _aws_error(exc: Exception) -> str:
    return _aws_code(exc) or type(exc).__name__


def publish_target_parse(value: str) -> PublishTarget:
    """``file:///dir`` → a directory, ``s3://bucket[/prefix]`` → S3; anything else is refused."""
    parts = urlsplit(value)
    if parts.scheme == "file" and parts.path.startswith("/") and not parts.netloc:
        return DirectoryTarget(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc and not parts.query and not parts.fragment:
        return S3Target(parts.netloc, parts.path.strip("/"))
    raise PublishError("JWTEX_PUBLISH_TARGET must be file:///absolute/dir or s3://bucket/prefix")


def tenant_target_path(folder: str, document: str) -> str:
    return f"{folder}/{document}"
