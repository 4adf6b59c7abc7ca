"""Admin login throttling against password guessing (docs/operators.md#login-throttling).

Failed logins are counted in the shared cache (so the limit holds across web processes) per
client address *and* username, and per address alone (a higher limit, against one address
spraying many usernames). Once a count reaches its limit, the admin login answers ``429``
with ``Retry-After`` — even to the right password — until the window (counted from the
first failure) ends. A successful login clears its (address, username) count.

Counting uses Django's ``user_login_failed`` / ``user_logged_in`` signals, so it sees every
authentication the admin's login form makes; the middleware only refuses. No admin code is
changed. Settings: ``JWTEX_LOGIN_MAX_FAILURES`` (5; 0 turns throttling off),
``JWTEX_LOGIN_MAX_FAILURES_PER_ADDRESS`` (4 × that) and ``JWTEX_LOGIN_LOCKOUT_SECONDS`` (900).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from exchange.api.params import client_address
from exchange.conf import jwtex_settings

logger = logging.getLogger("jwtex.login")


def _max_failures() -> int:
    return jwtex_settings.login_max_failures


def _max_failures_per_address() -> int:
    return jwtex_settings.login_max_failures_per_address


def _window() -> int:
    return jwtex_settings.login_lockout_seconds


def _address(request: HttpRequest | None) -> str:
    if request is None:
        return "-"
    return client_address(request) or "-"  # the same trusted-proxy rule as the exchange


def _username_digest(username: object) -> str:
    # Case-folded (backends may match case-insensitively) and hashed (any text, fixed length).
    return hashlib.sha256(str(username or "").casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _keys(request: HttpRequest | None, username: object) -> tuple[str, str]:
    address = _address(request)
    return f"jwtex:login:u:{address}:{_username_digest(username)}", f"jwtex:login:a:{address}"


def _count(key: str, now: float) -> int:
    """Failures counted in the window that is still running (the cache's expiry is a backstop)."""
    try:
        value = cache.get(key)
    except Exception:  # noqa: BLE001 - a cache outage must not lock everyone out (or in with a 500)
        logger.error("login throttle: cache unavailable")
        return 0
    if isinstance(value, (list, tuple)) and now - value[1] < _window():
        return int(value[0])
    return 0


def _hit(key: str, now: float) -> None:
    """Count one failure; the window runs from the first failure (value: [count, started])."""
    try:
        value = cache.get(key)
        if isinstance(value, (list, tuple)) and now - value[1] < _window():
            count, started = int(value[0]) + 1, value[1]
        else:
            count, started = 1, now
        cache.set(key, [count, started], timeout=max(1, int(started + _window() - now)))
    except Exception:  # noqa: BLE001 - a cache down: logged; the password alone decides
        logger.error("login throttle: cache unavailable")


def _retry_after(key: str, now: float) -> int:
    try:
        value = cache.get(key)
    except Exception:  # noqa: BLE001 - a cache down: ask for the whole window
        return _window()
    if isinstance(value, (list, tuple)):
        return max(1, int(value[1] + _window() - now))
    return _window()


@receiver(user_login_failed, dispatch_uid="jwtex.login_throttle.failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    if _max_failures() <= 0:
        return
    now = time.time()
    user_key, address_key = _keys(request, credentials.get("username"))
    _hit(user_key, now)
    _hit(address_key, now)
    logger.warning("admin login failed", extra={"jwtex": {"client_address": _address(request)}})


@receiver(user_logged_in, dispatch_uid="jwtex.login_throttle.succeeded")
def _logged_in(sender, request, user, **kwargs) -> None:
    user_key, _ = _keys(request, user.get_username())
    try:
        cache.delete(user_key)
    except Exception:  # noqa: BLE001 - a cache down: logged; the count ends with its window
        logger.error("login throttle: cache unavailable")


def _login_paths() -> frozenset[str]:
    try:
        return frozenset({reverse("admin:login")})
    except NoReverseMatch:
        return frozenset()


class LoginThrottleMiddleware:
    """Refuses a POST to the admin login once its (address, username) or address count is full."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and _max_failures() > 0 and request.path in _login_paths():
            refused = self._refusal(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        try:
            username = request.POST.get("username", "")
        except Exception:  # noqa: BLE001 - an unreadable form is the login view's to refuse
            return None
        user_key, address_key = _keys(request, username)
        now = time.time()
        if _count(user_key, now) >= _max_failures():
            key = user_key
        elif _count(address_key, now) >= _max_failures_per_address():
            key = address_key
        else:
            return None
        retry_after = _retry_after(key, now)
        logger.warning("admin login throttled", extra={"jwtex": {"client_address": _address(request)}})
        from django.contrib import admin

        context = {
            "site_header": admin.site.site_header,
            "site_title": admin.site.site_title,
            "minutes": max(1, round(retry_after / 60)),
        }
        body = render_to_string("jwtex/login_locked.html", context, request=request)
        response = HttpResponse(body, status=429, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(retry_after)
        response["Cache-Control"] = "no-store"
        return response
