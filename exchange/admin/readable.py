"""Values and labels as people read them on view-only pages (an auditor's): a list field one item
per line as its form edits it, not JSON (``["a", "b"]``), and labels in words, not field names
("Jwks resolved uri"). Model field names keep their places in the fieldsets; on a page the user
may only view, each listed here is shown by a display method of the same label instead."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe


def lines(field: str, label: str):
    """A display method: the list in ``field`` one item per line (``-`` when empty)."""

    @admin.display(description=label)
    def show(self, obj):
        values = getattr(obj, field, None) or []
        return format_html_join(mark_safe("<br>"), "{}", ((value,) for value in values)) if values else "-"

    return show


def value(field: str, label: str):
    """A display method: ``field``'s value under ``label``."""

    @admin.display(description=label)
    def show(self, obj):
        return getattr(obj, field, None)

    return show


class ReadableWhenViewOnlyMixin:
    """``view_only_fields``: {model field: the admin attribute that shows it on a view-only page}."""

    view_only_fields: dict[str, str] = {}

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        swap = self.view_only_fields
        return [
            (name, {**options, "fields": [swap.get(f, f) for f in options["fields"]]}) for name, options in fieldsets
        ]
