"""Wire shapes of ExchangeError: the views decide how an error looks, never what it is."""

from __future__ import annotations

from django.http import JsonResponse

from ..core.errors import AudienceNotAllowed, ExchangeError, RateLimited, RequestTooLarge, UnsupportedGrantType


def error_response(error: ExchangeError) -> JsonResponse:
    """The raw and JSON endpoints' errors: ``{"error", "error_description"}`` (docs/errors.md#error-responses)."""
    response = JsonResponse({"error": error.code, "error_description": error.description}, status=error.status)
    _headers(response, error)
    return response


def oauth_error_response(error: ExchangeError) -> JsonResponse:
    """RFC 8693 §2.2.2 / RFC 6749 §5.2: a token the service will not accept — malformed,
    invalid, or refused by policy — is ``invalid_request`` (400); a refused audience is
    ``invalid_target``. Not-found, size, rate and availability keep their own status."""
    if isinstance(error, AudienceNotAllowed):
        code, status = "invalid_target", 400
    elif isinstance(error, UnsupportedGrantType):
        code, status = error.code, 400
    elif error.status in (401, 403) or (error.status == 400 and not isinstance(error, RequestTooLarge)):
        code, status = "invalid_request", 400
    else:
        code, status = error.code, error.status
    response = JsonResponse({"error": code, "error_description": error.description}, status=status)
    _headers(response, error)
    return response


def _headers(response: JsonResponse, error: ExchangeError) -> None:
    response["Cache-Control"] = "no-store"
    if isinstance(error, RateLimited):
        response["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        response["WWW-Authenticate"] = f'Bearer error="{error.code}"'
