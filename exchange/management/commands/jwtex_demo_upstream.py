"""Development only: a stand-in CI platform, so a fresh ``make run`` can exchange a token
without GitHub. ``config`` prints a jwtex_apply file whose issuer ``github`` trusts a demo
key kept in var/ (static JWKS, nothing fetched); ``token`` mints a GitHub-shaped token with it.
The demo issuer URL is under ``.invalid`` (RFC 2606), so it can never be a real platform."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management.base import BaseCommand, CommandError

from exchange.conf import jwtex_settings
from exchange.core.aws import STS_AUDIENCE

DEMO_ISSUER = "https://ci.demo.jwtex.invalid"
DEMO_KID = "jwtex-demo-upstream"


def _demo_key():
    path = jwtex_settings.var_dir / "demo-upstream-key.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _parse_claims(items: list[str]) -> dict:
    claims = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CommandError(f"--claim {item!r}: expected NAME=VALUE")
        try:
            claims[name] = json.loads(value)
        except ValueError:
            claims[name] = value
    return claims


def _demo_config(tenant: str, key) -> dict:
    """The demo tenant's configuration file: the demo issuer with its static JWKS, and two rules."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": DEMO_KID, "alg": "RS256", "use": "sig"})
    return {
        "tenants": [
            {
                "slug": tenant,
                "name": "Acme Corp (demo)",
                "issuers": [
                    {
                        "id": "github",
                        "issuer": DEMO_ISSUER,
                        "audiences": [STS_AUDIENCE],
                        "jwks": {"keys": [jwk]},
                    }
                ],
                "rules": [
                    {
                        "name": "octo-org main branch",
                        "issuers": ["github"],
                        "when": "claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'",
                        "effect": "allow",
                        "lifetime": 900,
                        "session_tags": {
                            "repository": "claims.repository",
                            "ref": "aws_tag(claims.ref)",
                            "actor": "aws_tag(claims.actor)",  # try --actor 'dependabot[bot]'
                        },
                    },
                    {
                        "name": "everything else from github",
                        "issuers": ["github"],
                        "when": "true",
                        "effect": "deny",
                    },
                ],
            }
        ]
    }


class Command(BaseCommand):
    # Development helpers: the configuration warnings are make run's to print (once).
    requires_system_checks = []
    help = "Development only: print a demo config (`config`) or mint a demo upstream token (`token`)."

    def add_arguments(self, parser):
        parser.add_argument(
            "what",
            choices=["config", "token"],
            help="config: print a jwtex_apply file trusting the demo key; token: print a token signed by it",
        )
        parser.add_argument("--tenant", default="acme", help="config: the tenant's slug (default: acme)")
        parser.add_argument(
            "--repository",
            default="octo-org/octo-repo",
            help="token: the repository claim, OWNER/NAME (sets repository_owner)",
        )
        parser.add_argument("--ref", default="refs/heads/main", help="token: the ref claim (default: refs/heads/main)")
        parser.add_argument("--actor", default="octocat", help="token: the actor claim (default: octocat)")
        parser.add_argument("--audience", default=STS_AUDIENCE, help="token: the aud claim")
        parser.add_argument(
            "--claim",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="token: set (or override) a claim; VALUE is read as JSON when it parses, else as a string; repeatable",
        )

    def handle(self, *args, what, tenant, repository, ref, actor, audience, claim, **options):
        if jwtex_settings.production:
            raise CommandError("jwtex_demo_upstream is for development only.")
        key = _demo_key()
        if what == "config":
            document = _demo_config(tenant, key)
            self.stdout.write(yaml.safe_dump(document, sort_keys=False), ending="")
            return
        now = int(time.time())
        claims = {
            "iss": DEMO_ISSUER,
            "aud": audience,
            "sub": f"repo:{repository}:ref:{ref}",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            "repository": repository,
            "repository_owner": repository.split("/")[0],
            "ref": ref,
            "actor": actor,
            "workflow": "deploy",
            "run_id": str(now),
        }
        claims.update(_parse_claims(claim))
        self.stdout.write(jwt.encode(claims, key, algorithm="RS256", headers={"kid": DEMO_KID}), ending="")
