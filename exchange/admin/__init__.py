"""Operator screens, scoped by membership (tenants.admin_mixins): one module per model or page.

The ModelAdmins choose columns, forms and buttons; the work behind a button is a service,
called from exchange.admin.views. Private key material is never a field.
"""

from django.contrib import admin

from . import audit, issuers, keys, rules, tenants  # noqa: F401 - imported to register the ModelAdmins

admin.site.site_header = "jwtex administration"
admin.site.site_title = "jwtex"
admin.site.index_title = "Tenants, issuers, rules, keys and the audit log"
admin.site.site_url = None  # there is no public site to view: no "View site" link
