"""SIGTERM to ``make serve`` (docs/deployment.md#image), with either server: the exchanges in flight are
answered, and what the server's process spooled while the database was away is written to the
database before it exits — nothing is left in the spool, each token has exactly one record.

The database is reached through a proxy of the test's (tests.servers.TcpProxy): cut, the warm
process issues tokens with their records in its spool; back, and straight away SIGTERM, with no
exchange after it that would drain the spool. (tests/deploy/test_container.py does the same to
the container image.) CI's PostgreSQL pass runs it (``JWTEX_TEST_SERVED=1``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections import Counter

import pytest
from django.conf import settings as django_settings
from django.db import connection

from exchange.audit.spool import Spool
from exchange.models import ExchangeRecord, Issuer, Rule
from tests.conftest import make_tenant
from tests.servers import Client, TcpProxy, database_url, serve

pytestmark = [
    pytest.mark.served,
    pytest.mark.skipif(
        os.environ.get("JWTEX_TEST_SERVED") != "1",
        reason="served tests: JWTEX_TEST_SERVED=1 with DATABASE_URL=postgres://…, as .ci/run does",
    ),
    pytest.mark.django_db(transaction=True),
]


def _tenant(slug: str, issuer: str, upstream, *, static: bool = True) -> None:
    tenant = make_tenant(slug, rate_limit_per_minute=0)
    row = Issuer.objects.create(
        tenant=tenant,
        issuer_id="ci",
        issuer=issuer,
        audiences=[upstream.audience],
        static_jwks=upstream.jwks if static else None,
    )
    rule = Rule.objects.create(tenant=tenant, position=10, name="all", when="true", effect="allow")
    rule.issuers.add(row)


def _jti(token: bytes) -> str:
    payload = token.split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))["jti"]


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_sigterm_answers_what_is_in_flight_and_writes_the_spool_before_exit(tmp_path, upstream, server):
    if connection.vendor != "postgresql":
        pytest.fail("JWTEX_TEST_SERVED=1 needs DATABASE_URL=postgres://…", pytrace=False)
    tarpit = socket.socket()  # an upstream that never answers: its exchanges are in flight for 2 s
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(16)
    slow_issuer = f"http://127.0.0.1:{tarpit.getsockname()[1]}"
    _tenant("acme", upstream.issuer, upstream)
    _tenant("slow", slow_issuer, upstream, static=False)
    db = connection.settings_dict
    proxy = TcpProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))
    proxy.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWTEX_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="jwtex_site.settings",
        DATABASE_URL=database_url(db, port=proxy.port),
        JWTEX_KEY_ENCRYPTION_KEYS=",".join(django_settings.JWTEX_KEY_ENCRYPTION_KEYS),
        JWTEX_ALLOW_INSECURE_ISSUERS="1",
        JWTEX_VAR_DIR=str(tmp_path / "var"),
        JWTEX_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
        JWTEX_RATE_LIMIT_PER_ADDRESS="0",
        JWTEX_ACCESS_LOG="0",
        JWTEX_LOG_LEVEL="WARNING",
        WEB_CONCURRENCY="1",
        JWTEX_SERVER=server,
    )
    served = serve(env, tmp_path)
    try:
        client = Client(served.url)
        for _ in range(3):  # the process holds acme's snapshot: it serves while the database is away
            assert client.exchange("acme", upstream.mint(), "ci")[0] == 200
        proxy.stop()
        spooled = {
            _jti(body)
            for status, body in (client.exchange("acme", upstream.mint(), "ci") for _ in range(10))
            if status == 200
        }
        assert len(spooled) == 10 and Spool(tmp_path / "spool").pending() == 10
        proxy.start()
        slow: list[int | str] = []

        def slow_exchange() -> None:
            try:
                slow.append(Client(served.url, timeout=30).exchange("slow", upstream.mint(iss=slow_issuer), "ci")[0])
            except OSError as exc:
                slow.append(type(exc).__name__)

        in_flight = [threading.Thread(target=slow_exchange) for _ in range(2)]
        for thread in in_flight:
            thread.start()
        threading.Event().wait(0.5)
        stopping = threading.Thread(target=served.stop)
        stopping.start()  # SIGTERM
        for thread in in_flight:
            thread.join(30)
        tarpit.close()  # the upstream lets go: its background fetch ends now, not at its 10 s time-out
        stopping.join(40)
    finally:
        served.stop()
        proxy.stop()
    assert slow == [503, 503]  # answered (keys unavailable), not cut
    assert Spool(tmp_path / "spool").pending() == 0, served.log.read_text()[-3000:]
    counts = Counter(ExchangeRecord.objects.filter(issued_jti__in=spooled).values_list("issued_jti", flat=True))
    assert set(counts) == spooled and set(counts.values()) == {1}
    assert ExchangeRecord.objects.filter(tenant__slug="slow").count() == 2
