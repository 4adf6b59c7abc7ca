"""Views are adapters (CONVENTIONS §2): parse the wire format, call exchange_token, render.

Three wire formats of one exchange (SPEC §3) plus the tenant's discovery and JWKS (SPEC §2).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import conf
from ..errors import ExchangeError, InvalidRequest, NotFound, RequestTooLarge
from ..runtime import tenant_runtime_get
from ..services import exchange_token
from .errors import error_response, oauth_error_response
from .parsers import StrictJSONParser
from .serializers import ErrorSerializer, ExchangeRequestSerializer, ExchangeResponseSerializer

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"


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
    proxies = getattr(settings, "JWTEX_TRUSTED_PROXY_COUNT", 0)
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= proxies:
            address = _ip(hops[-proxies])
            if address is not None:
                return address
    return _ip(request.META.get("REMOTE_ADDR") or "")


class _PostOnlyView(View):
    http_method_names = ["post"]

    def http_method_not_allowed(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        """405 in the SPEC §3 error shape (Django's default is an empty text/html body);
        an unknown tenant is 404 whatever the method (SPEC §3)."""
        try:
            tenant_runtime_get(slug=kwargs.get("slug", ""))
        except ExchangeError as error:
            return error_response(error)
        response = error_response(InvalidRequest("Only POST is allowed here."))
        response.status_code = 405
        response["Allow"] = "POST"
        return response


def _read_body(request: HttpRequest) -> bytes:
    """The body, refusing an oversized one before reading it (413)."""
    limit = conf.max_token_bytes()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise InvalidRequest("Invalid Content-Length.") from None
    if declared > limit + 4096:
        raise RequestTooLarge(reason=f"Content-Length {declared}")
    try:
        body = request.body  # buffered once; request.POST parses from it afterwards
    except RequestDataTooBig:
        raise RequestTooLarge(reason="body over DATA_UPLOAD_MAX_MEMORY_SIZE") from None
    if len(body) > limit + 4096:
        raise RequestTooLarge(reason="body over the limit")
    return body


def _json_document(payload: bytes, *, max_age: int) -> HttpResponse:
    response = HttpResponse(payload, content_type="application/json")
    response["Cache-Control"] = f"public, max-age={max_age}"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def discovery_view(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        runtime = tenant_runtime_get(slug=slug)
    except ExchangeError as error:
        return error_response(error)
    return _json_document(runtime.discovery_json, max_age=conf.DISCOVERY_MAX_AGE)


def jwks_view(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        runtime = tenant_runtime_get(slug=slug)
    except ExchangeError as error:
        return error_response(error)
    return _json_document(runtime.jwks_json, max_age=conf.JWKS_MAX_AGE)


@method_decorator(csrf_exempt, name="dispatch")
class RawExchangeView(_PostOnlyView):
    """``POST /t/T/exchange[?issuerId=I]``: body is the raw JWT, answer is the raw JWT (the
    original jwtex contract; AWS SDKs read the token file as is, so no trailing newline)."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        try:
            if len(request.GET.getlist("issuerId")) > 1:
                # Parameter pollution: a proxy that checks the first and a view that reads the last.
                raise InvalidRequest("Parameter issuerId is repeated.")
            content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
            body = _read_body(request)
            if not body:
                raise InvalidRequest("The request body must be the token.")
            # `curl --data-binary "$jwt"` labels the bare token as a form; a real form has
            # name=value pairs, which a compact JWS never contains ('=' is not base64url).
            is_form = content_type == "application/x-www-form-urlencoded" and (b"=" in body or b"&" in body)
            if is_form or content_type in {"multipart/form-data", "application/json"} or content_type.endswith("+json"):
                raise InvalidRequest(
                    "Send the raw token as the body (not a form or JSON); see /token or /api/v1 for those."
                )
            minted = exchange_token(
                tenant_slug=slug,
                subject_token=body,
                issuer_id=request.GET.get("issuerId"),
                client_address=client_address(request),
                endpoint="raw",
            )
        except ExchangeError as error:
            return error_response(error)
        response = HttpResponse(minted.token.encode("ascii"), content_type="application/jwt")
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(csrf_exempt, name="dispatch")
class TokenExchangeView(_PostOnlyView):
    """``POST /t/T/token``: RFC 8693 token exchange, form-encoded in, JSON out."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        try:
            tenant_runtime_get(slug=slug)  # an unknown tenant is 404 before anything else
            content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
            if content_type != "application/x-www-form-urlencoded":
                raise InvalidRequest("The request must be application/x-www-form-urlencoded (RFC 8693 §2.1).")
            _read_body(request)  # 413 before the form parser buffers a huge body
            form = _form(request)
            for name in ("grant_type", "subject_token", "subject_token_type", "audience", "requested_token_type"):
                if len(form.getlist(name)) > 1:
                    raise InvalidRequest(f"Parameter {name} is repeated (RFC 6749 §3.2).")
            grant_type = form.get("grant_type")
            if not grant_type:
                raise InvalidRequest("grant_type is required.")
            if grant_type != TOKEN_EXCHANGE_GRANT:
                return JsonResponse(
                    {"error": "unsupported_grant_type", "error_description": "Only token exchange is supported."},
                    status=400,
                    headers={"Cache-Control": "no-store"},
                )
            subject_token = form.get("subject_token")
            if not subject_token:
                raise InvalidRequest("subject_token is required.")
            if form.get("subject_token_type") not in {TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN}:
                raise InvalidRequest(f"subject_token_type must be {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}.")
            requested = form.get("requested_token_type")
            if requested and requested != TOKEN_TYPE_JWT:
                raise InvalidRequest(f"requested_token_type must be {TOKEN_TYPE_JWT}.")
            for unsupported in ("actor_token", "actor_token_type"):
                if form.get(unsupported):
                    raise InvalidRequest(f"{unsupported} is not supported.")
            minted = exchange_token(
                tenant_slug=slug,
                subject_token=subject_token,
                audience=form.get("audience") or None,
                client_address=client_address(request),
                endpoint="rfc8693",
            )
        except ExchangeError as error:
            return oauth_error_response(error)
        return JsonResponse(
            {
                "access_token": minted.token,
                "issued_token_type": TOKEN_TYPE_JWT,
                "token_type": "N_A",
                "expires_in": minted.expires_at - minted.issued_at,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )


def _form(request: HttpRequest):
    """``request.POST``, with Django's own refusals (more than DATA_UPLOAD_MAX_NUMBER_FIELDS
    fields, a body its charset cannot decode) as ``invalid_request`` rather than an HTML 400."""
    try:
        return request.POST
    except (SuspiciousOperation, BadRequest, ValueError, LookupError):
        raise InvalidRequest("The form body cannot be parsed.") from None


class ExchangeAPIView(APIView):
    """``POST /api/v1/t/T/exchange``: the JSON API."""

    authentication_classes: list = []
    permission_classes: list = []
    parser_classes = [StrictJSONParser]

    @extend_schema(
        operation_id="exchange_token",
        summary="Exchange an upstream OIDC token for a tenant-signed JWT",
        request=ExchangeRequestSerializer,
        responses={
            200: ExchangeResponseSerializer,
            400: OpenApiResponse(ErrorSerializer, description="invalid_request"),
            401: OpenApiResponse(ErrorSerializer, description="invalid_token"),
            403: OpenApiResponse(ErrorSerializer, description="access_denied"),
            404: OpenApiResponse(ErrorSerializer, description="not_found"),
            413: OpenApiResponse(ErrorSerializer, description="token too large"),
            429: OpenApiResponse(ErrorSerializer, description="rate limited"),
            503: OpenApiResponse(ErrorSerializer, description="temporarily_unavailable"),
        },
    )
    def post(self, request: Request, slug: str) -> Response | HttpResponse:
        try:
            tenant_runtime_get(slug=slug)
            declared = request.META.get("CONTENT_LENGTH") or "0"
            if declared.isdigit() and int(declared) > conf.max_token_bytes() + 4096:
                raise RequestTooLarge(reason=f"Content-Length {declared}")
            serializer = ExchangeRequestSerializer(data=request.data)
            if not serializer.is_valid():
                raise InvalidRequest(_first_error(serializer.errors))
            data = serializer.validated_data
            minted = exchange_token(
                tenant_slug=slug,
                subject_token=data["subject_token"],
                issuer_id=data.get("issuer_id") or None,
                audience=data.get("audience") or None,
                client_address=client_address(request),
                endpoint="api",
            )
        except ExchangeError as error:
            return error_response(error)
        body = {
            "token": minted.token,
            "token_type": "JWT",
            "expires_in": minted.expires_at - minted.issued_at,
            "expires_at": datetime.fromtimestamp(minted.expires_at, UTC).isoformat().replace("+00:00", "Z"),
            "kid": minted.kid,
        }
        return Response(body, headers={"Cache-Control": "no-store"})

    def handle_exception(self, exc: Exception) -> Response | HttpResponse:
        # DRF's own refusals (malformed JSON, wrong media type, method) in the SPEC §3 shape.
        if isinstance(exc, drf_exceptions.ParseError):
            # StrictJSONParser's details are safe to show; anything else gets the generic text.
            detail = str(exc.detail) if isinstance(exc.detail, str) and exc.detail.startswith("The body") else ""
            return error_response(InvalidRequest(detail or "The body is not valid JSON."))
        if isinstance(exc, drf_exceptions.UnsupportedMediaType):
            return error_response(InvalidRequest("The body must be application/json."))
        if isinstance(exc, drf_exceptions.APIException):
            response = error_response(InvalidRequest(str(exc.detail)))
            response.status_code = exc.status_code
            return response
        if isinstance(exc, RequestDataTooBig):
            return error_response(RequestTooLarge(reason="body over DATA_UPLOAD_MAX_MEMORY_SIZE"))
        if isinstance(exc, (SuspiciousOperation, BadRequest)):
            return error_response(InvalidRequest("The request cannot be read."))
        return super().handle_exception(exc)


def _first_error(errors: dict) -> str:
    for field, messages in errors.items():
        message = messages[0] if isinstance(messages, list) and messages else messages
        return f"{field}: {message}"
    return "Invalid request."


@csrf_exempt
def tenant_path_not_found(request: HttpRequest, slug: str, rest: str = "") -> HttpResponse:
    """Any other path under /t/T/: 404 in the SPEC §3 shape, for known and unknown tenants alike."""
    return error_response(NotFound())
