"""The rule editor's session tags as rows: one row per tag (key, CEL expression, "optional"),
in the order the tags appear in the token, each row showing its own problems.

Stored as ``Rule.session_tags``: an ordered JSON object of tag key → CEL string, or
``{"value": CEL, "optional": true}`` for an optional tag. The checks are the model's
(``Rule.clean`` → ``rule_spec_validate``), whose messages name the tag by path
(``session_tags.<key>: …``); the rows find theirs by that key. What only the rows can get wrong
(a row without a key, a key without an expression, the same key twice) this field reports as
``Row N: …``. Messages about no single row (at most 50 tags, the token-size bound) stay at the
field.

A posted ``session_tags`` value without rows is read as the stored JSON document, so that
scripts (and tests) that post the document keep working; the browser always posts rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from django import forms
from django.forms.boundfield import BoundField
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from ..core import strict_json
from ..core.rules.spec import session_tag_entry_problem

__all__ = ["TagRow", "TagRowsField", "TagRowsWidget", "split_tag_errors"]

# Rows the form reads at most: more than Django's 1,000-field limit on a request allows anyway,
# and far above AWS's 50 tags (which the model reports).
MAX_ROWS = 400
EXTRA_ROWS = 3  # empty rows under the tags: room to add some with JavaScript off
_ROW_MESSAGE = re.compile(r"Row (\d+): (.*)", re.DOTALL)


@dataclass(frozen=True)
class TagRow:
    key: str = ""
    value: str = ""  # the CEL expression
    optional: bool = False
    errors: tuple[str, ...] = ()  # shown on the row

    @property
    def blank(self) -> bool:
        return not self.key and not self.value


def rows_from_stored(stored: object) -> list[TagRow]:
    """The stored object as rows, in order (both entry forms)."""
    if not isinstance(stored, dict):
        return []
    rows = []
    for key, entry in stored.items():
        if isinstance(entry, dict):
            value = entry.get("value")
            rows.append(TagRow(str(key), value if isinstance(value, str) else "", entry.get("optional") is True))
        else:
            rows.append(TagRow(str(key), entry if isinstance(entry, str) else json.dumps(entry)))
    return rows


def rows_from_json(text: str) -> list[TagRow]:
    """A posted JSON document as rows; ``forms.ValidationError`` if it is not one."""
    if not text.strip():
        return []
    try:
        stored = strict_json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise forms.ValidationError(f"Session tags: not a JSON object of tag key → CEL expression ({exc}).") from exc
    if not isinstance(stored, dict):
        raise forms.ValidationError("Session tags: a JSON object of tag key → CEL expression.")
    problems = [
        f"session_tags.{key}: {session_tag_entry_problem(entry)}"
        for key, entry in stored.items()
        if session_tag_entry_problem(entry)
    ]
    if problems:
        raise forms.ValidationError(problems)
    return rows_from_stored(stored)


def row_problems(rows: list[TagRow]) -> list[str]:
    """What the rows themselves get wrong, as ``Row N: …`` (N counts from 1)."""
    problems, seen = [], {}
    for number, row in enumerate(rows, start=1):
        if not row.key:
            problems.append(f"Row {number}: A session tag needs a key (clear the expression to drop the row).")
        elif not row.value:
            problems.append(
                f"Row {number}: Tag {row.key!r} needs a CEL expression for its value, e.g. claims.{row.key} "
                f"or aws_tag(claims.{row.key}) (clear the key to drop the row)."
            )
        elif row.key in seen:
            problems.append(f"Row {number}: Tag key {row.key!r} is already set in row {seen[row.key]}.")
        if row.key:
            seen.setdefault(row.key, number)
    return problems


def stored_from_rows(rows: list[TagRow]) -> dict:
    """Rows as the stored object: a plain CEL string, or the object for an optional tag."""
    return {row.key: {"value": row.value, "optional": True} if row.optional else row.value for row in rows}


def split_tag_errors(messages: list[str], keys: list[str]) -> tuple[dict[int, list[str]], list[str]]:
    """Each message on its row (by index into ``keys``), without the part naming the row; the
    rest stay with the field. Keys may hold ``.``, ``:``, spaces and the like, so a model message
    is matched by its prefix ``session_tags.<key>: `` against the keys, longest first."""
    prefixes = sorted(
        ((f"session_tags.{key}: ", index) for index, key in enumerate(keys) if key), key=lambda item: -len(item[0])
    )
    on_rows: dict[int, list[str]] = {}
    rest: list[str] = []
    for message in messages:
        match = _ROW_MESSAGE.fullmatch(message)
        if match and 1 <= int(match[1]) <= len(keys):
            on_rows.setdefault(int(match[1]) - 1, []).append(match[2])
            continue
        for prefix, index in prefixes:
            if message.startswith(prefix):
                on_rows.setdefault(index, []).append(message[len(prefix) :])
                break
        else:
            rest.append(message)
    return on_rows, rest


class TagRowsWidget(forms.Widget):
    """Rows of ``<name>-<i>-key``, ``<name>-<i>-value`` and ``<name>-<i>-optional``, with
    ``<name>-rows`` saying how many were sent; an "Add a tag" button (JavaScript) adds more."""

    template_name = "jwtex/widgets/tag_rows.html"

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        rows = [row for row in value or [] if isinstance(row, TagRow)] + [TagRow()] * EXTRA_ROWS
        base_id = context["widget"]["attrs"].get("id") or f"id_{name}"

        def entry(index, row: TagRow, number, *, template: bool = False) -> dict:
            return {
                "row": row,
                "key_name": f"{name}-{index}-key",
                "value_name": f"{name}-{index}-value",
                "optional_name": f"{name}-{index}-optional",
                "id": f"{base_id}-{index}",
                "number": number,
                # An <input> would drop the newlines of a multi-line expression (jwtex_apply's YAML).
                "multiline": "\n" in row.value or "\r" in row.value,
                "template": template,
            }

        context["widget"].update(
            base_id=base_id,
            describedby=self._described_by(base_id, context["widget"]["attrs"].get("aria-describedby") or ""),
            count=len(rows),
            # The last one is the <template> that "Add a tag" copies (JavaScript fills in the index).
            rows=[entry(i, row, i + 1) for i, row in enumerate(rows)]
            + [entry("__index__", TagRow(), "__number__", template=True)],
        )
        return context

    def _described_by(self, base_id: str, ids: str) -> str:
        # The admin gives the help text the id of the label's target (the first key input).
        help_id = f"{base_id}_helptext"
        return " ".join(f"{self.id_for_label(base_id)}_helptext" if i == help_id else i for i in ids.split())

    def render(self, name, value, attrs=None, renderer=None):
        # The project's templates (templates/jwtex/), which the default form renderer does not search.
        return mark_safe(render_to_string(self.template_name, self.get_context(name, value, attrs)))

    def id_for_label(self, id_):
        return f"{id_}-0-key" if id_ else id_

    def value_from_datadict(self, data, files, name):
        """The rows sent (all-empty rows dropped), or the posted JSON text, or None."""
        count = data.get(f"{name}-rows")
        if count is None:
            return data.get(name)
        try:
            count = min(max(int(count), 0), MAX_ROWS)
        except (TypeError, ValueError):
            count = 0
        rows = (
            TagRow(
                key=(data.get(f"{name}-{i}-key") or "").strip(),
                value=(data.get(f"{name}-{i}-value") or "").strip(),
                optional=bool(data.get(f"{name}-{i}-optional")),
            )
            for i in range(count)
        )
        return [row for row in rows if not row.blank]

    def value_omitted_from_data(self, data, files, name):
        return f"{name}-rows" not in data and name not in data


class TagRowsBoundField(BoundField):
    """Puts each message on its row: ``value()`` carries the rows' own messages to the widget,
    ``errors`` (what the templates show at the field) keeps the others and points at the rows.
    ``form.errors`` itself keeps every message."""

    def _rows(self) -> list[TagRow]:
        data = self.field.bound_data(self.data, self.initial) if self.form.is_bound else self.initial
        return self.field.prepare_value(data)

    def _split(self) -> tuple[list[TagRow], dict[int, list[str]], list[str]]:
        rows = self._rows()
        messages = list(self.form.errors.get(self.name, [])) if self.form.is_bound else []
        on_rows, rest = split_tag_errors(messages, [row.key for row in rows])
        return rows, on_rows, rest

    def value(self):
        rows, on_rows, _ = self._split()
        return [replace(row, errors=tuple(on_rows.get(i, ()))) for i, row in enumerate(rows)]

    @property
    def errors(self):
        everything = super().errors
        rows, on_rows, rest = self._split()
        if not on_rows:
            return everything
        named = ", ".join(repr(rows[i].key) if rows[i].key else f"row {i + 1}" for i in sorted(on_rows))
        rest.append(f"Some session tags have problems, shown on their rows below: {named}.")
        shown = everything.copy()
        shown.data, shown.field_id = rest, getattr(everything, "field_id", None)
        return shown


class TagRowsField(forms.Field):
    """Session tags edited as rows; cleans to the stored object (an ordered dict)."""

    widget = TagRowsWidget

    def get_bound_field(self, form, field_name):
        return TagRowsBoundField(form, self, field_name)

    def prepare_value(self, value):
        if isinstance(value, list):
            return [row for row in value if isinstance(row, TagRow)]
        if isinstance(value, str):
            try:
                return rows_from_json(value)
            except forms.ValidationError:
                return []
        return rows_from_stored(value)

    def to_python(self, value):
        if value in self.empty_values:
            return {}
        if isinstance(value, str):
            rows = rows_from_json(value)
        elif isinstance(value, list):
            rows = [row for row in value if isinstance(row, TagRow) and not row.blank]
        else:
            rows = rows_from_stored(value)
        problems = row_problems(rows)
        if problems:
            raise forms.ValidationError(problems)
        return stored_from_rows(rows)

    def has_changed(self, initial, data):
        if self.disabled:
            return False
        try:
            new = self.to_python(data)
        except forms.ValidationError:
            return True
        return list((initial or {}).items()) != list(new.items())
