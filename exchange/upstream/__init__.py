"""Upstream issuers over the network: the guarded HTTP client (fetch) and issuer key sets (jwks)."""
