"""An example jwtex mapper webhook (docs/mapper.md#example-mapper): the original jwtex's
examples/github/mapper.js, in Python — deny unless the repository's owner is octo-org, else copy nine
claims into session tags.

    JWTEX_ISSUER=https://jwtex.example.com/t/acme MAPPER_URL=https://mapper.example.com/ \\
        python examples/mapper.py 8080      # behind your TLS proxy; jwtex calls only https

It checks who calls: the bearer token must be signed by the tenant (its own JWKS), for this URL.
A call from jwtex's simulator says so ("simulation": true in the bearer's claims and the body):
its claims may have been typed in and no token is issued, so it gets the same answer but must
change nothing — this mapper changes nothing anyway, and only logs it as a simulation.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

ISSUER, URL = os.environ["JWTEX_ISSUER"], os.environ["MAPPER_URL"]
KEYS = jwt.PyJWKClient(f"{ISSUER}/.well-known/jwks.json")
TAGGED = ["actor", "event_name", "ref", "repository", "run_attempt", "run_id", "run_number", "sha", "workflow"]


def decide(claims: dict) -> dict:
    if claims.get("repository_owner") != "octo-org":
        return {"allow": False}
    claims = {name: value for name, value in claims.items() if name != "aud"}  # the audience is jwtex's to set
    claims["https://aws.amazon.com/tags"] = {
        "principal_tags": {n: [claims[n]] for n in TAGGED},
        "transitive_tag_keys": [],
    }
    return {"allow": True, "claims": claims}


class Mapper(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            caller = jwt.decode(
                bearer,
                KEYS.get_signing_key_from_jwt(bearer).key,
                algorithms=["ES256", "RS256"],
                audience=URL,
                issuer=ISSUER,
                options={"require": ["exp", "iat"]},
            )
        except jwt.PyJWTError:
            self.send_error(401)
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        simulation = caller.get("simulation") is True  # signed by jwtex; the body only repeats it
        if request.get("simulation", False) is not simulation:
            self.send_error(400, "the body and the bearer disagree on simulation")
            return
        decision = decide(request["claims"])
        print(
            f"{'simulation (nothing to change)' if simulation else 'exchange'}: {request['issuerId']} "
            f"{request['claims'].get('repository')!r} -> {'allow' if decision['allow'] else 'deny'}",
            file=sys.stderr,
        )
        answer = json.dumps(decision).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Mapper).serve_forever()
