"""Each wire format of the exchange (docs/endpoints.md#exchange-endpoints) parsed into one request value.

The views only call these, ``token_exchange`` and a renderer; every refusal here is an
``ExchangeError`` (``InvalidRequest``, ``RequestTooLarge``, ``UnsupportedGrantType``), so a bad
request is a 4xx in the endpoint's own error shape and never reaches the pipeline.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, QueryDict

from ..conf import jwtex_settings
from ..core.errors import InvalidRequest, RequestTooLarge, UnsupportedGrantType
from ..protocol import SUBJECT_TOKEN_TYPES, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE_JWT

# Room beside the token for the other parameters and their encoding (form or JSON).
BODY_OVERHEAD = 4096
RFC8693_PARAMETERS = ("grant_type", "subject_token", "subject_token_type", "audience", "requested_token_type")


@dataclass(frozen=True)
class ExchangeRequest:
    subject_token: str | bytes
    issuer_id: str | None = None
    audience: str | None = None
    client_address: str | None = None


def body_limit() -> int:
    return jwtex_settings.max_token_bytes + BODY_OVERHEAD


def declared_length_check(request: HttpRequest) -> None:
    """413 before a body larger than a token can be is read at all."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        size = int(declared)
    except ValueError:
        raise InvalidRequest("Invalid Content-Length.") from None
    if size > body_limit():
        raise RequestTooLarge(reason=f"Content-Length {size}")


def read_body(request: HttpRequest) -> bytes:
    """The body, refusing an oversized one before and after reading it (413)."""
    declared_length_check(request)
    try:
        body = request.body  # buffered once; request.POST parses from it afterwards
    except RequestDataTooBig:
        raise RequestTooLarge(reason="body over DATA_UPLOAD_MAX_MEMORY_SIZE") from None
    if len(body) > body_limit():
        raise RequestTooLarge(reason="body over the limit")
    return body


def _ip(value: str) -> str | None:
    """``value`` as a normalised IP address, or None. Whatever is not an address never
    becomes a rate-limit key or an audit value (PostgreSQL's inet column would refuse it,
    and the attempt would go unaudited)."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the address the trusted proxies saw (JWTEX_TRUSTED_PROXY_COUNT hops)."""
    proxies = jwtex_settings.trusted_proxy_count
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= proxies:
            address = _ip(hops[-proxies])
            if address is not None:
                return address
    return _ip(request.META.get("REMOTE_ADDR") or "")


def _content_type(request: HttpRequest) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()


def raw_request(request: HttpRequest) -> ExchangeRequest:
    """docs/endpoints.md#raw-exchange: the body is the token; ``?issuerId=`` pins the issuer."""
    if len(request.GET.getlist("issuerId")) > 1:
        # Parameter pollution: a proxy that checks the first and a view that reads the last.
        raise InvalidRequest("Parameter issuerId is repeated.")
    content_type = _content_type(request)
    body = read_body(request)
    if not body:
        raise InvalidRequest("The request body must be the token.")
    # `curl --data-binary "$jwt"` labels the bare token as a form; a real form has
    # name=value pairs, which a compact JWS never contains ('=' is not base64url).
    is_form = content_type == "application/x-www-form-urlencoded" and (b"=" in body or b"&" in body)
    if is_form or content_type in {"multipart/form-data", "application/json"} or content_type.endswith("+json"):
        raise InvalidRequest("Send the raw token as the body (not a form or JSON); see /token or /api/v1 for those.")
    return ExchangeRequest(
        subject_token=body, issuer_id=request.GET.get("issuerId"), client_address=client_address(request)
    )


def _form(request: HttpRequest) -> QueryDict:
    """``request.POST``, with Django's own refusals (more than DATA_UPLOAD_MAX_NUMBER_FIELDS
    fields, a body its charset cannot decode) as ``invalid_request`` rather than an HTML 400."""
    try:
        return request.POST
    except (SuspiciousOperation, BadRequest, ValueError, LookupError):
        raise InvalidRequest("The form body cannot be parsed.") from None


def token_exchange_request(request: HttpRequest) -> ExchangeRequest:
    """docs/endpoints.md#rfc-8693-token-exchange / RFC 8693 §2.1: a form-encoded token exchange request."""
    if _content_type(request) != "application/x-www-form-urlencoded":
        raise InvalidRequest("The request must be application/x-www-form-urlencoded (RFC 8693 §2.1).")
    read_body(request)  # 413 before the form parser buffers a huge body
    form = _form(request)
    for name in RFC8693_PARAMETERS:
        if len(form.getlist(name)) > 1:
            raise InvalidRequest(f"Parameter {name} is repeated (RFC 6749 §3.2).")
    grant_type = form.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required.")
    if grant_type != TOKEN_EXCHANGE_GRANT:
        raise UnsupportedGrantType()
    subject_token = form.get("subject_token")
    if not subject_token:
        raise InvalidRequest("subject_token is required.")
    if form.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
        raise InvalidRequest(f"subject_token_type must be {' or '.join(SUBJECT_TOKEN_TYPES)}.")
    requested = form.get("requested_token_type")
    if requested and requested != TOKEN_TYPE_JWT:
        raise InvalidRequest(f"requested_token_type must be {TOKEN_TYPE_JWT}.")
    for unsupported in ("actor_token", "actor_token_type"):
        if form.get(unsupported):
            raise InvalidRequest(f"{unsupported} is not supported.")
    return ExchangeRequest(
        subject_token=subject_token, audience=form.get("audience") or None, client_address=client_address(request)
    )


def api_request(request, data: dict) -> ExchangeRequest:
    """docs/endpoints.md#json-api: the JSON API's validated body (``ExchangeRequestSerializer``)."""
    return ExchangeRequest(
        subject_token=data["subject_token"],
        issuer_id=data.get("issuer_id") or None,
        audience=data.get("audience") or None,
        client_address=client_address(request),
    )
