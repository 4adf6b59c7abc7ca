"""Views are adapters (docs/design/layout.md#views-are-adapters): parse the wire format
(exchange.api.params), call the service, render the result or the error in the endpoint's own shape.

Three wire formats of one exchange (docs/endpoints.md#exchange-endpoints) plus the tenant's
discovery and JWKS (docs/endpoints.md#tenant-issuer-endpoints).
"""

from __future__ import annotations

from datetime import UTC, datetime

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

from ..core.errors import ExchangeError, InvalidRequest, NotFound, RequestTooLarge
from ..core.limits import DISCOVERY_MAX_AGE, JWKS_MAX_AGE
from ..core.values import MintedToken
from ..metrics import request_refused_observed
from ..protocol import ISSUED_TOKEN_TYPE_NA, TOKEN_TYPE_JWT
from ..services.exchange import tenant_check, tenant_documents, token_exchange
from . import params
from .error_responses import error_response, oauth_error_response
from .parsers import StrictJSONParser
from .serializers import ErrorSerializer, ExchangeRequestSerializer, ExchangeResponseSerializer


def _exchange(slug: str, request: params.ExchangeRequest, *, endpoint: str) -> MintedToken:
    return token_exchange(
        tenant_slug=slug,
        subject_token=request.subject_token,
        issuer_id=request.issuer_id,
        audience=request.audience,
        client_address=request.client_address,
        endpoint=endpoint,
    )


def _refused(response: HttpResponse, endpoint: str) -> HttpResponse:
    """A request refused before its token was read: not an audit record, but counted
    (docs/operations.md#refusals-that-are-not-records)."""
    request_refused_observed(endpoint=endpoint, status=response.status_code)
    return response


class _PostOnlyView(View):
    http_method_names = ["post"]
    endpoint = "raw"

    def http_method_not_allowed(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        """405 in the error shape of docs/errors.md#error-responses (Django's default is an empty text/html
        body); an unknown tenant is 404 whatever the method (docs/endpoints.md#unknown-or-disabled-tenants)."""
        try:
            tenant_check(slug=kwargs.get("slug", ""))
        except ExchangeError as error:
            return error_response(error)
        response = error_response(InvalidRequest("Only POST is allowed here."))
        response.status_code = 405
        response["Allow"] = "POST"
        return _refused(response, self.endpoint)


def _json_document(payload: bytes, *, max_age: int) -> HttpResponse:
    response = HttpResponse(payload, content_type="application/json")
    response["Cache-Control"] = f"public, max-age={max_age}"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def discovery_view(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        discovery, _ = tenant_documents(slug=slug)
    except ExchangeError as error:
        return error_response(error)
    return _json_document(discovery, max_age=DISCOVERY_MAX_AGE)


def jwks_view(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        _, jwks = tenant_documents(slug=slug)
    except ExchangeError as error:
        return error_response(error)
    return _json_document(jwks, max_age=JWKS_MAX_AGE)


def raw_exchange(request: HttpRequest, slug: str) -> HttpResponse:
    """docs/endpoints.md#raw-exchange, for the view below and for the lean WSGI route (exchange.api.fast)."""
    try:
        wire = params.raw_request(request)
    except ExchangeError as error:
        return _refused(error_response(error), "raw")
    try:
        minted = _exchange(slug, wire, endpoint="raw")
    except ExchangeError as error:
        return error_response(error)
    response = HttpResponse(minted.token.encode("ascii"), content_type="application/jwt")
    response["Cache-Control"] = "no-store"
    return response


@method_decorator(csrf_exempt, name="dispatch")
class RawExchangeView(_PostOnlyView):
    """``POST /t/T/exchange[?issuerId=I]``: body is the raw JWT, answer is the raw JWT (the
    original jwtex contract; AWS SDKs read the token file as is, so no trailing newline)."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        return raw_exchange(request, slug)


@method_decorator(csrf_exempt, name="dispatch")
class TokenExchangeView(_PostOnlyView):
    """``POST /t/T/token``: RFC 8693 token exchange, form-encoded in, JSON out."""

    endpoint = "rfc8693"

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        try:
            tenant_check(slug=slug)  # an unknown tenant is 404 before anything else
        except ExchangeError as error:
            return oauth_error_response(error)
        try:
            wire = params.token_exchange_request(request)
        except ExchangeError as error:
            return _refused(oauth_error_response(error), self.endpoint)
        try:
            minted = _exchange(slug, wire, endpoint="rfc8693")
        except ExchangeError as error:
            return oauth_error_response(error)
        return JsonResponse(
            {
                "access_token": minted.token,
                "issued_token_type": TOKEN_TYPE_JWT,
                "token_type": ISSUED_TOKEN_TYPE_NA,
                "expires_in": minted.expires_at - minted.issued_at,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )


class ExchangeAPIView(APIView):
    """``POST /api/v1/t/T/exchange``: the JSON API."""

    authentication_classes: list = []
    permission_classes: list = []
    parser_classes = [StrictJSONParser]

    @extend_schema(
        operation_id="token_exchange",
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
            tenant_check(slug=slug)
        except ExchangeError as error:
            return error_response(error)
        try:
            params.declared_length_check(request)
            serializer = ExchangeRequestSerializer(data=request.data)
            if not serializer.is_valid():
                raise InvalidRequest(_first_error(serializer.errors))
            wire = params.api_request(request, serializer.validated_data)
        except ExchangeError as error:
            return _refused(error_response(error), "api")
        try:
            minted = _exchange(slug, wire, endpoint="api")
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
        response = self._refusal(exc)
        return _refused(response, "api") if response is not None else super().handle_exception(exc)

    @staticmethod
    def _refusal(exc: Exception) -> HttpResponse | None:
        # DRF's own refusals (malformed JSON, wrong media type, method) in the error shape of
        # docs/errors.md#error-responses.
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
        return None


def _first_error(errors: dict) -> str:
    for field, messages in errors.items():
        message = messages[0] if isinstance(messages, list) and messages else messages
        return f"{field}: {message}"
    return "Invalid request."


@csrf_exempt
def tenant_path_not_found(request: HttpRequest, slug: str, rest: str = "") -> HttpResponse:
    """Any other path under /t/T/: 404 in the error shape, for known and unknown tenants alike
    (docs/endpoints.md#unknown-or-disabled-tenants)."""
    return error_response(NotFound())
