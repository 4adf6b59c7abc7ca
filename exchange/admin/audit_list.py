"""The audit list at any size (docs/scale.md#the-admin-at-100-million-records): every query it
runs walks an index from one end and stops after a page, whatever the table holds.

- **Pages by key, not by number.** Records are in (time, id) order, newest first; "older" shows
  the records before the last one shown (``?before=TIME,ID``), "newer" those after the first
  (``?after=…``), so a page costs the same at the first record as at the hundred-millionth, and
  records arriving meanwhile never shift a page (``?before=TIME`` alone jumps to a time).
- **Counts capped.** The count reads at most ``COUNT_CAP`` + 1 index entries ("more than
  10,000"), within ``COUNT_TIMEOUT_MS``.
- **Filters from small tables or fixed sets**: tenants and their issuers and rules from their
  own tables, decisions, error codes and endpoints fixed; time by a few windows. Never a DISTINCT
  over the records.
- **Search exact and indexed**: a jti (upstream or issued) or a subject (upstream or issued),
  exactly, or a subject prefix ending in ``*``.

A filter that matches few of many records walks its index a long way for a page; a statement
timeout (``LIST_TIMEOUT_MS``) answers such a page with a message (narrow the time or choose a
tenant) instead of holding a database connection.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db import OperationalError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tenants.admin_mixins import scope

from ..core import errors
from ..models import Issuer, Rule

PER_PAGE = 100
COUNT_CAP = 10_000
COUNT_TIMEOUT_MS = 500
LIST_TIMEOUT_MS = 5_000
BEFORE, AFTER = "before", "after"
CHOICES_CAP = 50  # issuer ids and rule names offered at once
ENDPOINTS = ("raw", "rfc8693", "api")
SEARCH_HELP = (
    "Matches exactly: a jti (upstream or issued), or a subject (upstream or issued); "
    "a subject prefix ends in * (e.g. repo:octo-org/*). Case matters."
)


class Cursor(NamedTuple):
    at: datetime
    id: int | None  # None: from this time on, whatever the id


def cursor_parse(text: str) -> Cursor:
    moment, _, ident = text.partition(",")
    at = parse_datetime(moment.strip().replace(" ", "+"))  # a '+' of an offset read from a URL is a space
    if at is None or (ident and not ident.strip().isdigit()):
        raise ValueError(f"not a position in the audit log: {text[:60]!r}")
    try:
        at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    except OverflowError:  # a time past year 9999 once in UTC
        raise ValueError(f"not a position in the audit log: {text[:60]!r}") from None
    return Cursor(at, int(ident) if ident else None)


def cursor_text(record) -> str:
    return f"{record.created_at.astimezone(UTC).isoformat(timespec='microseconds').replace('+00:00', 'Z')},{record.pk}"


def _position_text(cursor: Cursor, shift: int) -> str:
    """``cursor`` as a query value, its id moved by ``shift`` (the page starting at it, inclusive)."""
    at = cursor.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return at if cursor.id is None else f"{at},{cursor.id + shift}"


def _older(queryset: QuerySet, cursor: Cursor) -> QuerySet:
    """Records before ``cursor`` in (time, id) order; the bound on time alone lets the index stop."""
    if cursor.id is None:
        return queryset.filter(created_at__lt=cursor.at)
    return queryset.filter(Q(created_at__lt=cursor.at) | Q(pk__lt=cursor.id), created_at__lte=cursor.at)


def _newer(queryset: QuerySet, cursor: Cursor) -> QuerySet:
    if cursor.id is None:
        return queryset.filter(created_at__gte=cursor.at)
    return queryset.filter(Q(created_at__gt=cursor.at) | Q(pk__gt=cursor.id), created_at__gte=cursor.at)


def _timed(milliseconds: int, run):
    """``run()`` under a statement timeout on PostgreSQL; None when it ran out of time."""
    if connection.vendor != "postgresql":
        return run()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {int(milliseconds)}")
            return run()
    except OperationalError as exc:
        if "statement timeout" not in str(exc):
            raise
        return None


class AuditChangeList(ChangeList):
    """Django's change list with a key instead of a page number and a capped count."""

    def get_filters_params(self, params=None):
        lookup_params = super().get_filters_params(params)
        for name in (BEFORE, AFTER):
            lookup_params.pop(name, None)
        return lookup_params

    def get_ordering(self, request, queryset):
        return ["-created_at", "-id"]  # the keys' order; the columns are not sortable

    def get_query_string(self, new_params=None, remove=None):
        # A filter, a search or a new page starts from the newest records unless it says otherwise.
        return super().get_query_string(new_params, [*(remove or []), BEFORE, AFTER])

    def get_results(self, request):
        cursor, newer = None, False
        for name in (BEFORE, AFTER):
            text = request.GET.get(name)
            self.params.pop(name, None)
            self.filter_params.pop(name, None)
            if text:
                try:
                    cursor, newer = cursor_parse(text), name == AFTER
                except ValueError as exc:
                    raise IncorrectLookupParameters(exc) from exc
        page = _timed(LIST_TIMEOUT_MS, lambda: self._page(cursor, newer))
        if page is None:
            messages.warning(
                request,
                "This filter matches too few of the records to list them quickly: choose a tenant or a shorter time.",
            )
            page = ([], False, False)
        self.result_list, self.has_newer, self.has_older = page
        count = _timed(COUNT_TIMEOUT_MS, lambda: self.queryset.order_by().values("pk")[: COUNT_CAP + 1].count())
        self.count_capped = count is None or count > COUNT_CAP
        self.result_count = COUNT_CAP + 1 if count is None else count
        self.count_text = f"more than {COUNT_CAP:,}" if self.count_capped else f"{self.result_count:,}"
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.can_show_all = False
        self.multi_page = self.has_newer or self.has_older
        self.paginator = None
        self.newest_url = self.get_query_string()
        # Edges: the records shown, or (an empty page, past either end) the position asked for.
        rows = self.result_list
        older_edge = cursor_text(rows[-1]) if rows else (cursor and _position_text(cursor, 0 if newer else 1))
        newer_edge = cursor_text(rows[0]) if rows else (cursor and _position_text(cursor, 0 if newer else -1))
        self.older_url = self.get_query_string({BEFORE: older_edge}) if self.has_older else None
        self.newer_url = self.get_query_string({AFTER: newer_edge}) if self.has_newer else None
        self.position = cursor

    def _page(self, cursor: Cursor | None, newer: bool) -> tuple[list, bool, bool]:
        size = self.list_per_page
        if cursor is not None and newer:
            rows = list(_newer(self.queryset, cursor).order_by("created_at", "id")[: size + 1])
            return rows[:size][::-1], len(rows) > size, True
        rows = list((self.queryset if cursor is None else _older(self.queryset, cursor))[: size + 1])
        return rows[:size], cursor is not None, len(rows) > size


# --- filters ------------------------------------------------------------------------------------


class TimeFilter(admin.ListFilter):
    """Records since a moment: a few fixed windows, or any time a link gives (``created_at__gte``,
    e.g. the overview's "last 24 h")."""

    title = "time"
    WINDOWS = {
        "1h": ("last hour", timedelta(hours=1)),
        "24h": ("last 24 hours", timedelta(hours=24)),
        "7d": ("last 7 days", timedelta(days=7)),
        "30d": ("last 30 days", timedelta(days=30)),
    }

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.window = (params.pop("since", None) or [None])[-1]
        self.since_text = (params.pop("created_at__gte", None) or [None])[-1]
        self.since = None
        if self.window in self.WINDOWS:
            self.since = timezone.now() - self.WINDOWS[self.window][1]
        elif self.since_text:
            try:
                self.since = cursor_parse(self.since_text).at
            except ValueError as exc:
                raise IncorrectLookupParameters(exc) from exc

    def has_output(self):
        return True

    def expected_parameters(self):
        return ["since", "created_at__gte"]

    def queryset(self, request, queryset):
        return queryset if self.since is None else queryset.filter(created_at__gte=self.since)

    def choices(self, changelist):
        remove = self.expected_parameters()
        yield {
            "selected": self.since is None,
            "query_string": changelist.get_query_string(remove=remove),
            "display": "any time",
        }
        for key, (label, _) in self.WINDOWS.items():
            yield {
                "selected": self.window == key,
                "query_string": changelist.get_query_string({"since": key}, remove),
                "display": label,
            }
        if self.since is not None and self.window not in self.WINDOWS:
            yield {
                "selected": True,
                "query_string": changelist.get_query_string(),
                "display": f"since {self.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            }


class _ExactFilter(admin.SimpleListFilter):
    """One column equal to a value; a value not among the choices (an old link) still applies."""

    column = ""

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.column: value})

    def choices(self, changelist):
        yield from super().choices(changelist)
        value = self.value()
        if value is not None and value not in {str(v) for v, _ in self.lookup_choices}:
            yield {"selected": True, "query_string": changelist.get_query_string(), "display": value or "(none)"}

    def has_output(self):
        return True


class ErrorCodeFilter(_ExactFilter):
    title = "error code"
    parameter_name, column = "error_code__exact", "error_code"

    def lookups(self, request, model_admin):
        codes = {errors.ExchangeError.code}
        pending = [errors.ExchangeError]
        while pending:
            for sub in pending.pop().__subclasses__():
                codes.add(sub.code)
                pending.append(sub)
        return [(code, code) for code in sorted(codes)]


class EndpointFilter(_ExactFilter):
    title = "endpoint"
    parameter_name, column = "endpoint__exact", "endpoint"

    def lookups(self, request, model_admin):
        return [(name, name) for name in ENDPOINTS]


def _names(model, field: str, request, model_admin) -> list[str]:
    """Distinct ``field`` values of ``model`` rows (a configuration table, small) of the tenant the
    list is filtered by, else of the user's tenants; at most ``CHOICES_CAP``."""
    rows = scope(model.objects.all(), request, model_admin.view_roles)
    chosen = request.GET.get("tenant__id__exact", "")
    if chosen.isdigit():
        rows = rows.filter(tenant_id=int(chosen))
    return list(rows.order_by(field).values_list(field, flat=True).distinct()[:CHOICES_CAP])


class IssuerFilter(_ExactFilter):
    """By the issuer id the record keeps: the choices are the issuers of the tenant chosen (or of
    the user's tenants), from the issuers table."""

    title = "issuer"
    parameter_name = column = "issuer_ref"

    def lookups(self, request, model_admin):
        return [(name, name) for name in _names(Issuer, "issuer_id", request, model_admin)]


class RuleNameFilter(_ExactFilter):
    """The deciding rule by the name the record keeps (``rule_name``): it survives the rule's
    deletion, and it is what the overview's "top denial reasons" group by and link to
    (``?rule_name=NAME``; ``?rule_name=`` is "no rule decided"). Choices: the rules of the tenant
    chosen (or of the user's tenants), from the rules table."""

    title = "rule (as recorded)"
    parameter_name = column = "rule_name"

    def lookups(self, request, model_admin):
        return [("", "(no rule)"), *((name, name) for name in _names(Rule, "name", request, model_admin))]


def audit_search(queryset: QuerySet, term: str) -> QuerySet:
    """Exact matches through the indexes (``SEARCH_HELP``); an empty prefix matches nothing."""
    term = term.strip()
    if term.endswith("*"):
        prefix = term[:-1]
        if not prefix:
            return queryset.none()
        return queryset.filter(Q(upstream_sub__startswith=prefix) | Q(issued_sub__startswith=prefix))
    return queryset.filter(Q(upstream_jti=term) | Q(issued_jti=term) | Q(upstream_sub=term) | Q(issued_sub=term))
