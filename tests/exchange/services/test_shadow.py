"""Shadow rules (docs/operations.md#shadow-rules): a candidate rule set decides every exchange beside the
live one, without effect on the answer; the audit keeps exactly where the two differ."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from exchange.core.errors import ExchangeError
from exchange.models import ExchangeRecord, Rule
from exchange.services import exchange as exchange_module, shadow as shadow_module
from exchange.services.exchange import token_exchange
from exchange.services.shadow import shadow_replay, shadow_report, shadow_rules_promote, shadow_rules_start
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

LIVE = [
    ("deny forks", "claims.repository_owner != 'octo-org'", "deny", {}),
    (
        "main",
        "claims.ref == 'refs/heads/main'",
        "allow",
        {"repository": "claims.repository", "actor": "aws_tag(claims.actor)"},
    ),
]
CANDIDATE = [
    ("deny forks", "claims.repository_owner != 'octo-org'", "deny", {}),
    ("no bots", "claims.actor.endsWith('[bot]')", "deny", {}),  # would now deny
    (
        "main and release",
        "claims.ref == 'refs/heads/main' || claims.ref.startsWith('refs/heads/release/')",
        "allow",
        {"repository": "claims.repository", "ref": "claims.ref"},
    ),  # different tags, would now allow release branches
]
CORPUS = [
    {"ref": ref, "actor": actor, "repository_owner": owner}
    for ref, actor, owner in itertools.product(
        ["refs/heads/main", "refs/heads/release/1.2", "refs/heads/feature"],
        ["octocat", "renovate[bot]"],
        ["octo-org", "someone"],
    )
]


def rules(tenant, issuer, specs, *, shadow: bool) -> None:
    for position, (name, when, effect, tags) in enumerate(specs):
        rule = Rule.objects.create(
            tenant=tenant,
            position=(position + 1) * 10,
            name=name,
            when=when,
            effect=effect,
            session_tags=tags,
            shadow=shadow,
        )
        rule.issuers.add(issuer)


def decide_alone(tenant, issuer, specs, claims):
    """What one rule set decides, computed apart from the shadow code: its own tenant, its own exchange."""
    from exchange.models import Issuer
    from tests.conftest import make_tenant

    alone = make_tenant(f"alone-{abs(hash(str(specs))) % 10**8}-{len(claims)}")
    copy = Issuer.objects.create(
        tenant=alone,
        issuer_id=issuer.issuer_id,
        issuer=issuer.issuer,
        audiences=issuer.audiences,
        static_jwks=issuer.static_jwks,
    )
    rules(alone, copy, specs, shadow=False)
    return alone


def outcome(tenant, token):
    try:
        minted = token_exchange(tenant_slug=tenant.slug, subject_token=token, endpoint="raw")
    except ExchangeError as exc:
        return {"decision": "denied", "rule": exc.rule_name or None}
    tags = minted.claims.get("https://aws.amazon.com/tags", {}).get("principal_tags", {})
    return {
        "decision": "allowed",
        "rule": ExchangeRecord.objects.get(issued_jti=minted.jti).rule_name,
        "subject": minted.subject,
        "audience": minted.audience,
        "session_tags": {k: v[0] for k, v in tags.items()},
    }


def test_the_stored_divergences_are_exactly_the_differences_between_the_two_sets(tenant, issuer, upstream):
    rules(tenant, issuer, LIVE, shadow=False)
    rules(tenant, issuer, CANDIDATE, shadow=True)
    live_alone, candidate_alone = decide_alone(tenant, issuer, LIVE, "l"), decide_alone(tenant, issuer, CANDIDATE, "cc")
    for claims in CORPUS:
        token = upstream.mint(**claims)
        expected_live, expected_candidate = outcome(live_alone, token), outcome(candidate_alone, token)
        answered = outcome(tenant, token)
        assert answered == expected_live  # the candidate never changes the answer
        record = ExchangeRecord.objects.filter(tenant=tenant).order_by("-id").first()
        differs = sorted(
            k
            for k in ("decision", "rule", "subject", "audience", "session_tags")
            if expected_live.get(k) != expected_candidate.get(k)
        )
        if not differs:
            assert record.shadow is None, (claims, record.shadow)
            continue
        assert sorted(record.shadow["differs"]) == differs, claims
        assert record.shadow["decision"] == expected_candidate["decision"]
        assert record.shadow["rule"] == expected_candidate["rule"]
        if expected_candidate["decision"] == "allowed":
            assert record.shadow["session_tags"] == expected_candidate["session_tags"]


def test_promoting_makes_the_live_decisions_the_candidates(
    tenant, issuer, upstream, django_capture_on_commit_callbacks
):
    rules(tenant, issuer, LIVE, shadow=False)
    rules(tenant, issuer, CANDIDATE, shadow=True)
    candidate_alone = decide_alone(tenant, issuer, CANDIDATE, "p")
    assert shadow_rules_promote(tenant=tenant) == len(CANDIDATE)
    assert list(Rule.objects.filter(tenant=tenant).values_list("name", "shadow").order_by("position")) == [
        (name, False) for name, *_ in CANDIDATE
    ]
    for claims in CORPUS:
        token = upstream.mint(**claims)
        assert outcome(tenant, token) == outcome(candidate_alone, token)
    assert ExchangeRecord.objects.filter(tenant=tenant, shadow__isnull=False).count() == 0  # no candidate left


def test_without_a_candidate_set_the_shadow_code_is_never_entered(tenant, issuer, upstream, monkeypatch):
    rules(tenant, issuer, LIVE, shadow=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("shadow evaluation without a candidate set")

    monkeypatch.setattr(exchange_module, "shadow_divergence", must_not_run)
    monkeypatch.setattr(shadow_module, "shadow_divergence", must_not_run)
    for claims in CORPUS[:4]:
        outcome(tenant, upstream.mint(**claims))
    assert ExchangeRecord.objects.filter(tenant=tenant).count() == 4


def test_a_mapper_rule_in_shadow_is_reported_not_evaluated_and_never_called(tenant, issuer, upstream, settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    rules(tenant, issuer, LIVE, shadow=False)
    rule = Rule.objects.create(
        tenant=tenant,
        position=10,
        name="mapped",
        when="true",
        effect="mapper",
        mapper_url="http://127.0.0.1:9/never",
        shadow=True,
    )
    rule.issuers.add(issuer)
    outcome(tenant, upstream.mint())
    record = ExchangeRecord.objects.filter(tenant=tenant).order_by("-id").first()
    assert record.decision == "allowed" and record.mapper_outcome == ""
    assert record.shadow["decision"] == "not evaluated" and record.shadow["rule"] == "mapped"


def test_a_candidate_that_does_not_compile_changes_nothing(tenant, issuer, upstream):
    rules(tenant, issuer, LIVE, shadow=False)
    broken = Rule.objects.create(
        tenant=tenant, position=10, name="broken", when="claims.ref ==", effect="allow", shadow=True
    )  # saved without clean
    broken.issuers.add(issuer)
    assert outcome(tenant, upstream.mint())["decision"] == "allowed"
    assert ExchangeRecord.objects.filter(tenant=tenant).order_by("-id").first().shadow is None


def test_the_report_counts_the_last_day_by_kind(tenant, issuer, upstream):
    rules(tenant, issuer, LIVE, shadow=False)
    rules(tenant, issuer, CANDIDATE, shadow=True)
    for claims in CORPUS:
        outcome(tenant, upstream.mint(**claims))
    ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now() - timedelta(hours=25),
        endpoint="raw",
        decision="allowed",
        status_code=200,
        shadow={"decision": "denied", "differs": ["decision"], "tags_differ": False},
    )
    report = shadow_report(tenant=tenant, now=timezone.now())
    diverging = ExchangeRecord.objects.filter(
        tenant=tenant, shadow__isnull=False, created_at__gte=timezone.now() - timedelta(hours=24)
    )
    assert report["total"] == diverging.count() > 0
    would_deny = [r for r in diverging if r.decision == "allowed" and r.shadow["decision"] == "denied"]
    would_allow = [r for r in diverging if r.decision == "denied" and r.shadow["decision"] == "allowed"]
    tags = [r for r in diverging if "session_tags" in r.shadow["differs"]]
    assert report["counts"]["deny"] == len(would_deny) > 0
    assert report["counts"]["allow"] == len(would_allow) > 0
    assert report["counts"]["tags"] == len(tags) > 0
    assert {r.pk for r in shadow_report(tenant=tenant, now=timezone.now(), kind="deny")["records"]} == {
        r.pk for r in would_deny
    }


def test_starting_a_candidate_copies_the_live_rules(tenant, issuer):
    rules(tenant, issuer, LIVE, shadow=False)
    assert shadow_rules_start(tenant=tenant) == len(LIVE)
    copies = Rule.objects.filter(tenant=tenant, shadow=True).order_by("position")
    assert [(r.name, r.when, [i.issuer_id for i in r.issuers.all()]) for r in copies] == [
        (name, when, ["ci"]) for name, when, *_ in LIVE
    ]
    with pytest.raises(ValueError):
        shadow_rules_start(tenant=tenant)


def test_replay_runs_the_candidate_over_kept_claims_only_when_the_tenant_keeps_them(tenant, issuer, upstream):
    rules(tenant, issuer, LIVE, shadow=False)
    outcome(tenant, upstream.mint(actor="renovate[bot]"))
    assert ExchangeRecord.objects.get(tenant=tenant).upstream_claims is None  # off by default
    with pytest.raises(ValueError):
        shadow_replay(tenant=tenant, count=10, now=timezone.now())
    tenant.keep_upstream_claims = True
    tenant.save()
    for actor in ("octocat", "renovate[bot]"):
        outcome(tenant, upstream.mint(actor=actor))
    rules(tenant, issuer, CANDIDATE, shadow=True)
    replay = shadow_replay(tenant=tenant, count=10, now=timezone.now())
    assert replay["replayed"] == 2 and replay["candidate"]
    by_actor = {c["record"].upstream_claims["actor"]: c for c in replay["changed"]}
    assert by_actor["renovate[bot]"]["replayed"]["decision"] == "denied"  # "no bots"
    assert by_actor["octocat"]["differs"] == ["rule", "session_tags"]


def test_shadow_rules_in_the_file_are_applied_and_exported_back():
    import yaml

    from exchange.config.apply import config_apply
    from exchange.config.export import config_export

    document = {
        "tenants": [
            {
                "slug": "acme",
                "name": "Acme",
                "keep_upstream_claims": True,
                "issuers": [{"id": "ci", "issuer": "https://ci.example", "audiences": ["aud"]}],
                "rules": [
                    {"name": "main", "issuers": ["ci"], "when": "claims.ref == 'refs/heads/main'", "effect": "allow"}
                ],
                "shadow_rules": [
                    {"name": "main", "issuers": ["ci"], "when": "false", "effect": "allow"},
                    {"name": "rest", "issuers": ["ci"], "when": "true", "effect": "deny"},
                ],
            }
        ]
    }
    config_apply(document=document, now=timezone.now())
    exported = config_export(tenant_slugs=["acme"])["tenants"][0]
    assert [r["name"] for r in exported["rules"]] == ["main"] and exported["keep_upstream_claims"] is True
    assert Tenant.objects.get(slug="acme").keep_upstream_claims
    assert [(r["name"], r["when"]) for r in exported["shadow_rules"]] == [("main", "false"), ("rest", "true")]
    assert not config_apply(
        document=yaml.safe_load(yaml.safe_dump(config_export(tenant_slugs=["acme"]))), now=timezone.now()
    ).changed
    document["tenants"][0].pop("shadow_rules")  # absent: no candidate set
    config_apply(document=document, now=timezone.now())
    assert not Rule.objects.filter(shadow=True).exists() and "shadow_rules" not in config_export()["tenants"][0]


def test_a_candidate_that_changes_only_the_source_identity_is_recorded_as_differing(tenant, issuer, upstream):
    main = ("main", "claims.ref == 'refs/heads/main'", "allow", {"repository": "claims.repository"})
    rules(tenant, issuer, [main], shadow=False)
    rules(tenant, issuer, [main], shadow=True)
    Rule.objects.filter(tenant=tenant, shadow=True).update(source_identity="aws_source_identity(claims.actor)")
    token_exchange(
        tenant_slug=tenant.slug,
        subject_token=upstream.mint(ref="refs/heads/main", actor="renovate[bot]"),
        endpoint="raw",
    )
    record = ExchangeRecord.objects.filter(tenant=tenant).order_by("-id").first()
    assert record.shadow["differs"] == ["source_identity"]
    assert record.shadow["source_identity"] == "renovate_bot_"
