"""Realistic audit records made by SQL, for the scale benchmarks (PostgreSQL only).

``insert_sql(shape, rows, days)`` is one ``INSERT … SELECT`` over ``generate_series``: ``rows``
records spread evenly over the ``days`` before now, oldest first (as a running service writes
them), across the tenants named ``TENANTS`` (their ``github`` and ``gitlab`` issuers and rules
``main``, ``deploy`` and ``forks`` must exist): 90 % allowed (GitHub Actions or GitLab subjects of
200 repositories, three session tags, a 43-character kid), 10 % denied (a deny rule, no rule
allowing it, or an expired token, with their reasons). ``shape`` is ``"new"`` (this release's
columns: compact claims, the issued subject left out when it is the upstream one, time-ordered
record ids) or ``"old"`` (the shape before it, for the upgrade benchmark).
"""

from __future__ import annotations

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")

_SOURCE = """
SELECT g, ts, denied, kind, repo, ref, t.*, e.epoch,
  CASE WHEN gitlab THEN 'gitlab' ELSE 'github' END AS issuer_ref,
  CASE WHEN gitlab THEN 'https://gitlab.com' ELSE 'https://token.actions.githubusercontent.com' END AS iss,
  CASE WHEN gitlab THEN 'project_path:octo-group/app-' || repo || ':ref_type:branch:ref:' || ref
       ELSE 'repo:octo-org/app-' || repo || ':ref:refs/heads/' || ref END AS sub,
  md5(g::text || ':' || random()::text) AS jti,
  CASE WHEN r < 0.7 THEN 'raw' WHEN r < 0.9 THEN 'rfc8693' ELSE 'api' END AS endpoint,
  CASE WHEN denied AND kind < 0.3 THEN 'forks' WHEN denied THEN ''
       WHEN repo % 3 = 0 THEN 'deploy' ELSE 'main' END AS rule,
  ('10.' || (repo % 250) || '.' || (g % 250) || '.' || (g % 199))::inet AS address
FROM (
  SELECT g, now() - make_interval(secs => {days} * 86400 * (1 - g::float8 / {rows})) AS ts,
    random() < 0.1 AS denied, random() AS kind, floor(random() * 200)::int AS repo, random() < 0.2 AS gitlab,
    random() AS r, floor(random() * 5)::int AS tk,
    CASE WHEN random() < 0.8 THEN 'main' ELSE 'release-' || floor(random() * 9)::int END AS ref
  FROM generate_series(1, {rows}) g
) s
JOIN (SELECT t.id AS tenant_id, t.slug, row_number() OVER (ORDER BY t.slug) - 1 AS k FROM tenants_tenant t
      WHERE t.slug IN ({tenants})) t ON t.k = s.tk
CROSS JOIN LATERAL (SELECT extract(epoch FROM s.ts)::bigint AS epoch) e
"""

_COMMON = """
  ts, endpoint, CASE WHEN denied THEN 'denied' ELSE 'allowed' END,
  CASE WHEN NOT denied THEN '' WHEN kind < 0.6 THEN 'access_denied' ELSE 'invalid_token' END,
  CASE WHEN NOT denied THEN 200 WHEN kind < 0.6 THEN 403 ELSE 401 END,
  CASE WHEN NOT denied THEN '' WHEN kind < 0.3 THEN 'rule ''forks'' (deny) matched'
       WHEN kind < 0.6 THEN 'no rule allows this token (issuer ' || issuer_ref || ', sub ' || sub || ')'
       ELSE 'The token has expired: exp ' || (epoch - 120) || ' is before now ' || epoch || '.' END,
  issuer_ref, rule, iss, sub, gen_random_uuid()::text, to_jsonb('https://jwtex.example.com/t/' || slug),
  CASE WHEN denied THEN '' ELSE jti END,
  CASE WHEN denied THEN '' ELSE 'kQ7gT1yUeVQ0Xg3L0dD6y2w3t9Rz4pN8mB5cH1aS2fE' END,
  CASE WHEN denied THEN '' ELSE 'sts.amazonaws.com' END,
  CASE WHEN denied THEN NULL ELSE to_timestamp(epoch + 900) END,
  address, tenant_id, '', ''
"""

_TAGS = "'repository', 'octo-org/app-' || repo, 'ref', ref, 'actor', 'dev-' || (repo * 7 % 40)"

_NEW = """
INSERT INTO exchange_exchangerecord (created_at, endpoint, decision, error_code, status_code, reason, issuer_ref,
  rule_name, upstream_iss, upstream_sub, upstream_jti, upstream_aud, issued_jti, issued_kid, issued_aud, issued_exp,
  client_address, tenant_id, mapper_error, mapper_outcome, issued_sub, issued_claims_compact, record_id)
SELECT {common},
  '',
  CASE WHEN denied THEN NULL ELSE jsonb_build_object('iss', 'https://jwtex.example.com/t/' || slug, 'iat', epoch,
    'https://aws.amazon.com/tags', jsonb_build_array(jsonb_build_object({tags}))) END,
  (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' || substr(jti, 1, 3) || '8'
   || substr(jti, 4, 15))::uuid
FROM ({source}) x
"""

_OLD = """
INSERT INTO exchange_exchangerecord (created_at, endpoint, decision, error_code, status_code, reason, issuer_ref,
  rule_name, upstream_iss, upstream_sub, upstream_jti, upstream_aud, issued_jti, issued_kid, issued_aud, issued_exp,
  client_address, tenant_id, mapper_error, mapper_outcome, issued_sub, issued_claims, record_id, issuer_id, rule_id)
SELECT {common},
  CASE WHEN denied THEN '' ELSE sub END,
  CASE WHEN denied THEN NULL ELSE jsonb_build_object('iss', 'https://jwtex.example.com/t/' || slug, 'sub', sub,
    'aud', 'sts.amazonaws.com', 'iat', epoch, 'nbf', epoch, 'exp', epoch + 900, 'jti', jti,
    'https://aws.amazon.com/tags', jsonb_build_object('principal_tags', jsonb_build_object(
      'repository', jsonb_build_array('octo-org/app-' || repo), 'ref', jsonb_build_array(ref),
      'actor', jsonb_build_array('dev-' || (repo * 7 % 40))))) END,
  gen_random_uuid(),
  (SELECT i.id FROM exchange_issuer i WHERE i.tenant_id = x.tenant_id AND i.issuer_id = x.issuer_ref),
  (SELECT r.id FROM exchange_rule r WHERE r.tenant_id = x.tenant_id AND r.name = x.rule AND NOT r.shadow)
FROM ({source}) x
"""


def insert_sql(shape: str, rows: int, days: int) -> str:
    source = _SOURCE.format(rows=int(rows), days=int(days), tenants=", ".join(f"'{t}'" for t in TENANTS))
    template = {"new": _NEW, "old": _OLD}[shape]
    return template.format(common=_COMMON, source=source, tags=_TAGS)
