"""How long one publish of a tenant's issuer documents takes, write and read-back included
(docs/endpoints.md#published-issuer-url): the figure the pre-publish window must cover on top of
the documents' max-age.

    .venv/bin/python bench/publish_benchmark.py [--n 50]

``issuer_publish()`` end to end (the tenant's keys read, both documents rendered, written, read
back, compared, the state recorded) to a directory on this machine's disk (fsync'd) and to moto's
S3 server on loopback (tests/kms.py: real boto3 calls, no TLS, no network, so a lower bound).
Throwaway SQLite database under a temporary directory. Prints the median, p95 and maximum.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from exchange_benchmark import django_setup


def _measure(label: str, tenant_id: int, n: int) -> None:
    from django.utils import timezone

    from exchange.publish.service import issuer_publish

    times = []
    for _ in range(n):
        start = time.perf_counter()
        result = issuer_publish(tenant_id=tenant_id, now=timezone.now())
        times.append(time.perf_counter() - start)
        assert result.confirmed, result.error
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(
        f"{label:<44} median {statistics.median(times) * 1e3:7.1f} ms   p95 {p95 * 1e3:7.1f} ms   "
        f"max {times[-1] * 1e3:7.1f} ms   ({n} publishes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    os.environ["JWTEX_ALLOW_INSECURE_ISSUERS"] = "1"
    django_setup()
    from django.test import override_settings

    from exchange.services.tenants import tenant_create
    from tests.kms import REGION, MotoKms, botocore_models_share

    directory = tempfile.mkdtemp(prefix="jwtex-published-")
    with override_settings(JWTEX_PUBLISH_TARGET=f"file://{directory}"):
        tenant = tenant_create(slug="dir", name="dir", published_issuer_url="https://issuers.example.com/dir")
        _measure("to a directory (fsync'd)", tenant.pk, args.n)
    botocore_models_share()
    server = MotoKms()
    os.environ.update(server.environment())
    server.client("s3").create_bucket(Bucket="issuers", CreateBucketConfiguration={"LocationConstraint": REGION})
    with override_settings(JWTEX_PUBLISH_TARGET="s3://issuers/prod"):
        tenant = tenant_create(slug="s3", name="s3", published_issuer_url="https://issuers.example.com/s3")
        _measure("to S3 (moto's server on loopback)", tenant.pk, args.n)
    server.stop()


if __name__ == "__main__":
    main()
