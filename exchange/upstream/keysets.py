"""Parsed upstream key sets, cached per process: a JWKS document is parsed once per change,
not once per request. Bounded; a lock keeps eviction safe across threads."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from ..core.jwks import KeySet

# (issuer pk, digest of the JWKS document) → KeySet: a set is parsed once per change and
# process, not once per request. Bounded; a lock keeps eviction safe across threads.
_KEYSETS: dict[tuple[int, str], KeySet] = {}
_KEYSETS_MAX = 512
_KEYSETS_LOCK = threading.Lock()


def jwks_digest(jwks: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jwks, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def keyset_remember(key: tuple[int, str], keyset: KeySet) -> None:
    with _KEYSETS_LOCK:
        while len(_KEYSETS) >= _KEYSETS_MAX:
            _KEYSETS.pop(next(iter(_KEYSETS)))
        _KEYSETS[key] = keyset


def keyset_of(*, issuer_pk: int, jwks: Mapping[str, Any]) -> KeySet:
    """``KeySet.from_jwks`` (ValueError on a non-JWKS document), memoised per process. The
    exchange path asks through its snapshot's own memo first (exchange.upstream.issuer_keys)."""
    key = (issuer_pk, jwks_digest(jwks))
    keyset = _KEYSETS.get(key)
    if keyset is None:
        keyset = KeySet.from_jwks(jwks)
        keyset_remember(key, keyset)
    return keyset
