"""Benchmark-only switches: per-exchange work left out, to measure what it costs (README, "Performance").

``bench/http_benchmark.py`` serves the same exchanges with one piece of their work switched
off (``JWTEX_BENCH_ABLATE=metrics``, …) against the full path, so that its table says where
the time of a served exchange goes. Never in production, by three locks:

- ``jwtex_site/settings.py`` reads ``JWTEX_BENCH_ABLATE`` only outside production mode (a
  loopback ``JWTEX_PUBLIC_URL``); elsewhere the setting stays empty, whatever the environment;
- ``off()`` answers False in production mode whatever the setting holds (a settings module of
  one's own, or a test overriding it);
- the ``jwtex.E026`` system check fails when the variable is set in production mode, so the web
  application and the worker refuse to start (``exchange.checks.startup_checks_enforce``), and
  ``jwtex.W005`` warns whenever it is honoured.

``JWTEX_BENCH_TIMELINE=1`` (same locks) records the slowest exchanges' timelines for the
benchmark instead (``exchange.timeline``).
"""

from __future__ import annotations

from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import jwtex_settings

# What can be switched off, each with what the exchange then leaves out.
PIECES = {
    "audit-write": "the audit record is built but not written (the answer does not wait for a commit)",
    "audit-record": "the audit record is neither built nor written",
    "exchange-log": "the exchange's log line",
    "metrics": "the exchange's counter and histogram updates",
    "rate-limits": "the per-tenant and per-address rate-limit counters",
    "jti-mark": "the one-time upstream jti mark in the shared cache",
    "headers": "the security headers' finishing of the response (the lean route)",
    "request": "Django's request and response objects on the lean route (a bare one instead)",
}

_off: frozenset[str] | None = None


def switched_off() -> frozenset[str]:
    """The pieces switched off in this process: nothing in production mode."""
    global _off
    if _off is None:
        _off = frozenset() if jwtex_settings.production else frozenset(jwtex_settings.bench_ablate) & PIECES.keys()
    return _off


def off(piece: str) -> bool:
    """True when the benchmark switched ``piece`` off (never in production mode)."""
    return piece in (_off if _off is not None else switched_off())


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs) -> None:
    global _off
    if setting in ("JWTEX_BENCH_ABLATE", "JWTEX_PRODUCTION"):
        _off = None
