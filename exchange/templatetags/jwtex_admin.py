"""Small template filters for the admin pages."""

import json

from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None


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
