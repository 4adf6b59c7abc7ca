"""Signing-key rotation: a pure state machine over a tenant's keys (docs/design/key-lifecycle.md#signing-key-lifecycle).

    next ──(pre-publish window passed and rotation due)──▶ active ──▶ retiring ──▶ retired
                                                                      (published until every
                                                                       token it signed expired)

Invariants (tests/exchange/test_rotation.py simulates a year of them):
- a key is in the JWKS for at least the pre-publish window (≥ our JWKS max-age) before it
  signs, so no relying party with a cached JWKS meets a token it cannot verify;
- a key that stopped signing stays published until ``max_token_lifetime + margin`` after its
  last signature; then its private part is destroyed;
- at most three keys are published (next, active, retiring), because the tenant's settings
  are refused unless ``interval ≥ pre-publish + max lifetime + margin`` (tenant_rotation_errors);
- with a published issuer URL (docs/endpoints.md#published-issuer-url), a next key is promoted only
  once the read-back of the published JWKS has confirmed it, and a full max-age after that: a
  publish that failed or is slow delays the rotation, never lets an unpublished key sign.

``rotation_plan`` takes values and a ``now`` and returns what to do; ``exchange.keys``
applies the plan to rows under a row lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .limits import DEFAULT_LEEWAY, JWKS_MAX_AGE

# Clock skew between our nodes and relying parties, on top of the longest token lifetime.
RETIRE_MARGIN = timedelta(seconds=DEFAULT_LEEWAY * 5)
MAX_PUBLISHED_KEYS = 3
# How soon to look again at a next key that waits for its publication to be confirmed.
PUBLICATION_WAIT = timedelta(minutes=1)


@dataclass(frozen=True)
class KeyView:
    kid: str
    state: str  # next | active | retiring
    created_at: datetime
    activate_after: datetime | None = None
    activated_at: datetime | None = None
    retire_after: datetime | None = None
    # When the published copy of the JWKS was first read back with this key (a published issuer only).
    published_at: datetime | None = None


@dataclass(frozen=True)
class RotationPolicy:
    interval: timedelta
    prepublish: timedelta
    max_token_lifetime: timedelta
    # The tenant has a published issuer URL: a key signs only once confirmed there (see above).
    publication_required: bool = False

    @property
    def retire_window(self) -> timedelta:
        return self.max_token_lifetime + RETIRE_MARGIN


@dataclass(frozen=True)
class RotationPlan:
    create_next_activate_after: datetime | None = None  # publish a new key that may sign from then
    create_active: bool = False  # no key can sign: make one that signs at once
    activate: str | None = None  # kid of the next key that starts signing now
    retiring: tuple[tuple[str, datetime], ...] = ()  # (kid, retire_after) of keys that stop signing now
    retire: tuple[str, ...] = ()  # kids whose last token has expired: unpublish, destroy private part
    reschedule: tuple[str, datetime] | None = None  # (kid, new activate_after) of the next key
    next_check_at: datetime | None = None

    @property
    def changes(self) -> bool:
        return bool(
            self.create_next_activate_after
            or self.create_active
            or self.activate
            or self.retiring
            or self.retire
            or self.reschedule
        )


def tenant_rotation_errors(*, interval: int, prepublish: int, max_token_lifetime: int) -> dict[str, str]:
    """Settings whose tokens would outlive their key's verification window, or that would pile
    up published keys, are refused when saved (docs/design/key-lifecycle.md#timings): errors at save,
    not surprises at 3 a.m."""
    errors = {}
    if prepublish < JWKS_MAX_AGE:
        errors["key_prepublish_window"] = (
            f"At least {JWKS_MAX_AGE} s (the JWKS Cache-Control max-age), or relying parties could miss a new key."
        )
    needed = prepublish + max_token_lifetime + int(RETIRE_MARGIN.total_seconds())
    if interval < needed:
        errors["key_rotation_interval"] = (
            f"At least pre-publish window + max token lifetime + {int(RETIRE_MARGIN.total_seconds())} s margin "
            f"= {needed} s: a key's tokens must expire before the key after next is published."
        )
    return errors


def rotation_plan(
    keys: Sequence[KeyView], *, now: datetime, policy: RotationPolicy, force: bool = False
) -> RotationPlan:
    """What to do at ``now``. ``force`` is the operator's "rotate now": the same safe path,
    with the rotation due at once and the pre-publish window cut to the JWKS max-age."""
    active = [k for k in keys if k.state == "active"]
    upcoming = sorted((k for k in keys if k.state == "next"), key=lambda k: k.created_at)
    retiring = [k for k in keys if k.state == "retiring"]

    retire = tuple(k.kid for k in retiring if k.retire_after is not None and k.retire_after <= now)
    plan: dict = {"retire": retire}

    current = active[0] if active else None
    if current is None:
        if upcoming:
            # Nothing signs (first run after a revoke): the published next key signs at once.
            plan["activate"] = upcoming[0].kid
        else:
            plan["create_active"] = True
        return RotationPlan(**plan, next_check_at=now + timedelta(minutes=1))

    started = current.activated_at or current.created_at
    due_at = started + policy.interval
    prepare_at = due_at - policy.prepublish
    if force and not upcoming:
        plan["create_next_activate_after"] = now + timedelta(seconds=JWKS_MAX_AGE)
        return RotationPlan(**plan, next_check_at=now + timedelta(seconds=JWKS_MAX_AGE))
    if not upcoming:
        if now >= prepare_at:
            activate_after = max(due_at, now + policy.prepublish)
            plan["create_next_activate_after"] = activate_after
            return RotationPlan(**plan, next_check_at=activate_after)
        return RotationPlan(**plan, next_check_at=_earliest(prepare_at, retiring, retire))

    candidate = upcoming[0]
    # A next key signs from its own activate_after, which was never set earlier than its
    # creation + the JWKS max-age: every relying party has seen it by then.
    ready_at = candidate.activate_after or (candidate.created_at + policy.prepublish)
    if policy.publication_required:
        if candidate.published_at is None:
            # Not confirmed at the published location yet: it cannot sign, whatever the time.
            return RotationPlan(**plan, next_check_at=_earliest(now + PUBLICATION_WAIT, retiring, retire))
        ready_at = max(ready_at, candidate.published_at + timedelta(seconds=JWKS_MAX_AGE))
    # Never more than three published keys: a retiring key leaves before the next one retires.
    still_retiring = [k.retire_after for k in retiring if k.kid not in retire and k.retire_after is not None]
    if still_retiring:
        ready_at = max(ready_at, *still_retiring)
    if force:
        floor = _forced_floor(candidate, policy, now, still_retiring)
        if ready_at > floor:
            ready_at = floor
            plan["reschedule"] = (candidate.kid, ready_at)
    if now >= ready_at:
        plan["activate"] = candidate.kid
        plan["retiring"] = ((current.kid, now + policy.retire_window),)
        plan.pop("reschedule", None)
        return RotationPlan(**plan, next_check_at=_earliest(now + policy.retire_window, retiring, retire))
    return RotationPlan(**plan, next_check_at=_earliest(ready_at, retiring, retire))


def _forced_floor(candidate: KeyView, policy: RotationPolicy, now: datetime, still_retiring: list) -> datetime:
    """The earliest a forced rotation may let ``candidate`` sign: the JWKS max-age after it was
    published (created, when publication is not required), and after the keys still retiring."""
    seen_from = candidate.published_at if policy.publication_required else candidate.created_at
    return max([seen_from + timedelta(seconds=JWKS_MAX_AGE), now, *still_retiring])


def _earliest(when: datetime, retiring: Sequence[KeyView], retired_now: Sequence[str]) -> datetime:
    pending = [k.retire_after for k in retiring if k.retire_after is not None and k.kid not in retired_now]
    return min([when, *pending])
