"""The ID token kept for RP-initiated logout's ``id_token_hint`` (OpenID Connect RP-Initiated
Logout 1.0 §2; some providers, e.g. Okta, require it). Sessions live in the database, and no token
is stored in clear: it is encrypted under a key derived from ``SECRET_KEY`` and dropped at logout."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

SESSION_KEY = "jwtex_sso_id_token_hint"


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"jwtex admin sign-on id_token_hint\0" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def id_token_hint_store(session, id_token: str) -> None:
    session[SESSION_KEY] = _fernet().encrypt(id_token.encode()).decode()


def id_token_hint_pop(session) -> str:
    stored = session.pop(SESSION_KEY, "")
    if not stored:
        return ""
    try:
        return _fernet().decrypt(stored.encode()).decode()
    except InvalidToken:
        return ""
