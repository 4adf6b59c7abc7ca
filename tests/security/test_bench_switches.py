"""The benchmark's switches (exchange/ablation.py) can never leave work out in production: the settings
do not read them there, ``off()`` ignores them there, and a production process with one set
refuses to start (jwtex.E026). Outside production each switch leaves out its piece and nothing
else."""

from __future__ import annotations

import json

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from exchange import ablation, timeline
from exchange.checks import startup_checks_enforce
from exchange.models import ExchangeRecord

from .endpoints import send
from .test_production_safety import PRODUCTION_ENV, production_run


def _ids() -> set[str]:
    return {message.id for message in run_checks(tags=["security"]) if message.id.startswith("jwtex.")}


SHOW = (
    "import os, json; os.environ['DJANGO_SETTINGS_MODULE'] = 'jwtex_site.settings'; import django; django.setup(); "
    "from django.conf import settings as s; from exchange import ablation; "
    "print(json.dumps([list(s.JWTEX_BENCH_ABLATE), s.JWTEX_BENCH_TIMELINE, sorted(ablation.switched_off())]))"
)


@pytest.mark.parametrize("variable", ["JWTEX_BENCH_ABLATE", "JWTEX_BENCH_TIMELINE"])
def test_a_production_process_never_reads_them_and_refuses_to_start(tmp_path, variable):
    env = {**PRODUCTION_ENV, variable: "audit-write,metrics" if variable == "JWTEX_BENCH_ABLATE" else "1"}
    shown = production_run(["-c", SHOW], env, tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == [[], False, []]
    served = production_run(["-c", "import jwtex_site.wsgi"], env, tmp_path)
    assert served.returncode != 0
    assert "Refusing to start the web application" in served.stderr and "(jwtex.E026)" in served.stderr
    checked = production_run(["manage.py", "check"], env, tmp_path)
    assert checked.returncode != 0 and "jwtex.E026" in checked.stderr


def test_outside_production_a_process_reads_them(tmp_path):
    env = {"JWTEX_BENCH_ABLATE": "audit-write, metrics", "JWTEX_BENCH_TIMELINE": "1"}
    shown = production_run(["-c", SHOW], env, tmp_path)
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == [
        ["audit-write", "metrics"],
        True,
        ["audit-write", "metrics"],
    ]


def test_off_ignores_a_setting_forced_in_production(settings):
    settings.JWTEX_BENCH_ABLATE = tuple(ablation.PIECES)
    assert all(ablation.off(piece) for piece in ablation.PIECES)
    settings.JWTEX_PRODUCTION = True
    assert not any(ablation.off(piece) for piece in ablation.PIECES)
    assert "jwtex.E026" in _ids()
    with pytest.raises(ImproperlyConfigured, match="jwtex.E026"):
        startup_checks_enforce("web application")


def test_nothing_is_off_by_default_and_an_unknown_piece_is_an_error(settings):
    assert ablation.switched_off() == frozenset()
    assert not {"jwtex.E026", "jwtex.E027", "jwtex.W005"} & _ids()
    settings.JWTEX_BENCH_ABLATE = ("metrics",)
    assert "jwtex.W005" in _ids() and "jwtex.E027" not in _ids()
    settings.JWTEX_BENCH_ABLATE = ("metrics", "audit")  # a typo must not measure the full path silently
    assert "jwtex.E027" in _ids()


@pytest.mark.django_db(transaction=True)
def test_the_audit_switches_leave_out_the_record_and_nothing_else(client, settings, exchangeable, upstream):
    assert send("raw", client, upstream.mint(jti="a")).status_code == 200
    assert ExchangeRecord.objects.count() == 1
    for piece in ("audit-write", "audit-record"):
        settings.JWTEX_BENCH_ABLATE = (piece,)
        assert send("raw", client, upstream.mint(jti=piece)).status_code == 200
        assert ExchangeRecord.objects.count() == 1  # not written
    settings.JWTEX_BENCH_ABLATE = ()
    assert send("raw", client, upstream.mint(jti="b")).status_code == 200
    assert ExchangeRecord.objects.count() == 2


def test_the_timeline_is_off_unless_enabled():
    assert timeline._on is False
    timeline.begin()
    timeline.mark("x")
    timeline.end()
    assert timeline._slowest == []


# --- each of the other switches leaves out its piece (outside production only) -------------------


def _lean_exchange(settings, token: str, pieces: tuple[str, ...]):
    from exchange.api.fast import MachineRoutes
    from tests.exchange.api.test_fast import call

    settings.JWTEX_BENCH_ABLATE = pieces
    app = MachineRoutes(lambda environ, start_response: pytest.fail("reached Django"))
    return call(app, "POST", "/t/acme/exchange", token.encode(), CONTENT_TYPE="application/jwt")


@pytest.mark.django_db(transaction=True)
def test_the_lean_route_switches(settings, exchangeable, upstream):
    status, headers, body = _lean_exchange(settings, upstream.mint(jti="full"), ())
    assert status.startswith("200") and headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = _lean_exchange(settings, upstream.mint(jti="headers"), ("headers",))
    assert status.startswith("200") and "X-Content-Type-Options" not in headers and "X-Frame-Options" not in headers
    status, headers, body = _lean_exchange(settings, upstream.mint(jti="request"), ("request",))
    assert status.startswith("200") and body.count(b".") == 2  # a token, from the bare request
    settings.JWTEX_PRODUCTION = True  # never in production: the headers are back
    status, headers, body = _lean_exchange(settings, upstream.mint(jti="prod"), ("headers",))
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db(transaction=True)
def test_the_log_and_metrics_switches(client, settings, exchangeable, upstream, caplog):
    from prometheus_client import REGISTRY

    def exchanges() -> float:
        return (
            REGISTRY.get_sample_value(
                "jwtex_exchanges_total", {"tenant": "acme", "endpoint": "raw", "decision": "allowed", "error": ""}
            )
            or 0.0
        )

    caplog.set_level("INFO", logger="jwtex.exchange")
    for pieces, logged, counted in [((), 1, 1), (("exchange-log",), 0, 1), (("metrics",), 1, 0)]:
        settings.JWTEX_BENCH_ABLATE = pieces
        caplog.clear()
        before = exchanges()
        assert send("raw", client, upstream.mint()).status_code == 200
        assert [r.message for r in caplog.records].count("exchange allowed") == logged, pieces
        assert exchanges() - before == counted, pieces


@pytest.mark.django_db(transaction=True)
def test_the_limit_and_jti_switches(client, settings, exchangeable, upstream):
    from exchange.models import Issuer

    Issuer.objects.update(replay_protection=True)
    exchangeable.rate_limit_per_minute = 1
    exchangeable.save()
    from tests.conftest import runtime_clear

    runtime_clear()
    token = upstream.mint()
    assert send("raw", client, token).status_code == 200
    settings.JWTEX_BENCH_ABLATE = ("rate-limits", "jti-mark")
    assert send("raw", client, token).status_code == 200  # neither counted nor marked
    settings.JWTEX_BENCH_ABLATE = ("jti-mark",)
    assert send("raw", client, upstream.mint()).status_code == 429
    settings.JWTEX_BENCH_ABLATE = ("rate-limits",)
    assert send("raw", client, token).status_code == 401  # a replay
