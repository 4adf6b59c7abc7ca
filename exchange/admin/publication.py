"""The tenant page's "publication" line: what is live at its published issuer URL, when it last
published, and an alarm when the published key set is not the one that signs
(docs/endpoints.md#published-issuer-url)."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from tenants.models import Tenant

from ..publish.status import publication_status_get


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "never"


def publication_summary(tenant: Tenant):
    status = publication_status_get(tenant=tenant)
    if status is None:
        return "Not published elsewhere: relying parties fetch the documents jwtex serves."
    lines = [
        format_html(
            "Last publish confirmed: {} · last read-back: {}", _when(status.published_at), _when(status.checked_at)
        ),
        format_html("Live there: {}", ", ".join(status.live) or "no key"),
    ]
    if status.alarm:
        why = []
        if set(status.live) != set(status.served):
            why.append(
                f"the published key set differs from the one jwtex serves ({', '.join(status.served) or 'none'})"
            )
        if status.error:
            why.append(
                f"{status.error} ({status.failures} failure(s) in a row; next attempt {_when(status.next_attempt_at)})"
            )
        lines.append(format_html('<strong class="errornote">ALARM: {}</strong>', "; ".join(why)))
    if not status.active_live:
        lines.append(
            format_html(
                "<strong>The signing key is not confirmed there: this tenant's exchanges answer 503 until it is "
                "(manage.py jwtex_publish --tenant {}).</strong>",
                tenant.slug,
            )
        )
    return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines))
