"""One error hierarchy for an exchange (docs/design/layout.md#one-error-hierarchy).

Each error carries the OAuth-style ``code``, the HTTP ``status`` and a ``description``
that is safe to show a client (no keys, tokens, claim values or stack traces). The
detailed ``reason`` is for the audit record and the log only.
"""

from __future__ import annotations


class ExchangeError(Exception):
    code = "server_error"
    status = 500
    default_description = "The exchange failed."

    def __init__(
        self,
        description: str | None = None,
        *,
        reason: str | None = None,
        rule_id: int | None = None,
        rule_name: str = "",
    ) -> None:
        self.description = description or self.default_description
        self.reason = reason or self.description
        # The rule that decided this refusal (a deny rule, or the allow rule whose output or
        # audience was refused), for the audit record (docs/operations.md#what-a-record-holds); empty when
        # no rule decided.
        self.rule_id = rule_id
        self.rule_name = rule_name
        super().__init__(self.reason)


class InvalidRequest(ExchangeError):
    """Malformed request or malformed token (RFC 6749 §5.2, RFC 8693 §2.2.2)."""

    code = "invalid_request"
    status = 400
    default_description = "The request is malformed."


class UnsupportedGrantType(InvalidRequest):
    """RFC 6749 §5.2: the grant type is not one this endpoint supports (only token exchange)."""

    code = "unsupported_grant_type"
    default_description = "Only token exchange is supported."


class RequestTooLarge(InvalidRequest):
    status = 413
    default_description = "The token is larger than this service accepts."


class InvalidToken(ExchangeError):
    """A well-formed token that does not verify (RFC 6750 §3.1)."""

    code = "invalid_token"
    status = 401
    default_description = "The token is not valid."


class UnknownKeyId(InvalidToken):
    """No key of the issuer's set has the token's ``kid``: the caller may refetch once."""

    default_description = "The token was signed by a key this issuer does not publish."


class AccessDenied(ExchangeError):
    code = "access_denied"
    status = 403
    default_description = "No rule allows this exchange."


class AudienceNotAllowed(AccessDenied):
    """The requested audience is not one the matching rule allows (``invalid_target`` in RFC 8693)."""

    default_description = "The requested audience is not allowed."


class NotFound(ExchangeError):
    code = "not_found"
    status = 404
    default_description = "Not found."


class RateLimited(ExchangeError):
    code = "too_many_requests"
    status = 429
    default_description = "Too many exchanges; retry later."

    def __init__(self, description: str | None = None, *, reason: str | None = None, retry_after: int = 60) -> None:
        super().__init__(description, reason=reason)
        self.retry_after = retry_after


class TemporarilyUnavailable(ExchangeError):
    code = "temporarily_unavailable"
    status = 503
    default_description = "The upstream issuer's keys are unavailable; retry later."
