"""Run the test identity provider: ``python -m tests.idp.server PORT CLIENT_ID SECRET REDIRECT_URI...``.

Migrates its own SQLite database (``IDP_DATABASE``), makes an RSA signing key and a confidential
client (authorization code, PKCE-capable, no consent screen), prints ``ready`` and serves on
127.0.0.1:PORT until killed.
"""

import os
import sys


def main() -> None:
    port, client_id, secret, *redirects = sys.argv[1:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.idp.settings")
    import django

    django.setup()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application
    from oidc_provider.models import Client, ResponseType, RSAKey

    call_command("migrate", verbosity=0)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    RSAKey.objects.create(
        key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
    )
    client = Client.objects.create(
        name="jwtex admin",
        client_id=client_id,
        client_secret=secret,
        client_type="confidential",
        jwt_alg="RS256",
        require_consent=False,
        reuse_consent=True,
        _redirect_uris="\n".join(redirects),
        _post_logout_redirect_uris="\n".join(r.replace("/admin/sso/callback/", "/admin/login/") for r in redirects),
        _scope="openid email profile",
    )
    code, _ = ResponseType.objects.get_or_create(value="code", defaults={"description": "code"})
    client.response_types.add(code)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadedWSGIServer(("127.0.0.1", int(port)), QuietHandler)
    server.daemon_threads = True
    server.set_app(get_wsgi_application())
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
