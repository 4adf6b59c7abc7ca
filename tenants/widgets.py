"""Form widgets shared by the admin screens."""

from __future__ import annotations

from django import forms
from django.utils.html import format_html

_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def human_duration(seconds: int | None) -> str:
    """``2592000`` → ``"30 days"``, ``5400`` → ``"1 hour 30 minutes"`` (the two largest units)."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds <= 0:
        return f"{seconds} seconds"
    parts = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(parts[:2])


class SecondsInput(forms.NumberInput):
    """A number of seconds, with what it means next to it ("= 30 days")."""

    def render(self, name, value, attrs=None, renderer=None):
        html = super().render(name, value, attrs, renderer)
        try:
            meaning = human_duration(int(value)) if value not in (None, "") else ""
        except (TypeError, ValueError):
            meaning = ""
        if not meaning:
            return html
        return format_html('{} <span class="jwtex-duration">= {}</span>', html, meaning)
