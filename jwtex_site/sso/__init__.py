"""Single sign-on for the admin through the organisation's OpenID Connect provider (docs/operators.md#single-sign-on).

- ``roles``: the roles claim → tenant roles (pure);
- ``provider``: the provider's discovery document and keys, and the ID token's verification;
- ``accounts``: the account an identity signs in to, its memberships made to match the claim;
- ``backend`` and ``views``: mozilla-django-oidc's relying party (state, nonce, PKCE) with the above.
"""
