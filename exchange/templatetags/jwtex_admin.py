"""Small template filters for the admin pages."""

import json

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def inline_code(text):
    """A help text's `code` spans (written with backticks) as <code>, the rest escaped."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: shown as written
        return escape(text)
    return mark_safe("".join(f"<code>{escape(part)}</code>" if i % 2 else escape(part) for i, part in enumerate(parts)))


@register.filter
def pretty_json(value):
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


@register.simple_tag(takes_context=True)
def jwtex_user_tenants(context):
    """``[(tenant, role)]`` for the admin index: the tenants the user may see."""
    from tenants.admin_mixins import VIEW, is_superuser, tenants_for, user_roles

    request = context.get("request")
    if request is None:
        return []
    roles = user_roles(request)
    superuser = is_superuser(request)
    return [(t, "superuser" if superuser else roles.get(t.pk, "")) for t in tenants_for(request, VIEW)[:50]]
