"""Where the tests' published issuer documents are served from, as relying parties reach them:

- ``static_site``: a directory (``JWTEX_PUBLISH_TARGET=file://…``) served by Python's plain
  ``http.server`` on loopback, configured as the README tells operators to configure theirs
  (``Content-Type: application/json`` and ``Cache-Control`` on the two documents);
- ``s3_site``: a bucket of moto's S3 server (``JWTEX_PUBLISH_TARGET=s3://…``, real boto3 calls)
  behind a loopback stand-in for a CDN that forwards each GET to the bucket under a prefix, as
  CloudFront with an origin path and an origin access control does (signed reads of a private
  bucket), and passes the object's own headers on.

Either way the published URL is ``{site.url}/{slug}``, and a verifier that is given only that URL
fetches everything it needs from the site, never from jwtex.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exchange.core.publication import CACHE_CONTROL, CONTENT_TYPE

Answer = tuple[int, dict[str, str], bytes]


class Site:
    """A loopback HTTP server answering GETs with ``fetch(path)``; counts what it served."""

    def __init__(self, fetch: Callable[[str], Answer]) -> None:
        site = self
        self.gets: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                site.gets.append(self.path)
                status, headers, body = fetch(self.path.split("?")[0])
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def get(self, path: str) -> Answer:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {}, exc.read()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _directory_fetch(root: Path) -> Callable[[str], Answer]:
    def fetch(path: str) -> Answer:
        file = (root / path.lstrip("/")).resolve()
        if root.resolve() not in file.parents or not file.is_file():
            return 404, {"Content-Type": "text/plain"}, b"not found"
        # As the README's nginx example: the extension-less openid-configuration is JSON too.
        return 200, {"Content-Type": CONTENT_TYPE, "Cache-Control": CACHE_CONTROL}, file.read_bytes()

    return fetch


@pytest.fixture
def static_site(tmp_path, settings):
    """A directory jwtex publishes to, served over HTTP on loopback."""
    root = tmp_path / "issuers"
    root.mkdir()
    settings.JWTEX_PUBLISH_TARGET = f"file://{root}"
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True  # the site is http://127.0.0.1
    site = Site(_directory_fetch(root))
    site.root = root
    yield site
    site.stop()


BUCKET = "jwtex-issuers"
PREFIX = "prod"


def _cdn_fetch(s3) -> Callable[[str], Answer]:
    """GET /x → the object ``prod/x`` of the bucket, read with signed requests (as CloudFront's
    origin access control reads a private bucket), its Content-Type and Cache-Control passed on."""

    def fetch(path: str) -> Answer:
        try:
            answer = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{path}")
        except s3.exceptions.NoSuchKey:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        headers = {"Content-Type": answer.get("ContentType", ""), "Cache-Control": answer.get("CacheControl", "")}
        return 200, {k: v for k, v in headers.items() if v}, answer["Body"].read()

    return fetch


@pytest.fixture
def s3_site(kms, settings):
    """moto's S3 (the KMS fixture's server: one moto server holds every service), an empty bucket
    that jwtex publishes to under ``prod/``, and a CDN stand-in serving it on loopback."""
    kms.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    settings.JWTEX_PUBLISH_TARGET = f"s3://{BUCKET}/{PREFIX}"
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    site = Site(_cdn_fetch(kms.client("s3")))
    site.s3 = kms.client("s3")
    yield site
    site.stop()
