"""Admin lists filter by what they show and nothing else (docs/design/layout.md#the-tenant-is-explicit):
``DeclaredLookupsOnlyMixin``, which every ``ModelAdmin`` of the project carries (the tenant-scoped
ones through ``tenants.admin_mixins.TenantScopedAdminMixin``)."""

from __future__ import annotations

import logging

from django.contrib import admin
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ERROR_FLAG, IGNORED_PARAMS, PAGE_VAR
from django.core.exceptions import ValidationError
from django.db import DataError, models
from django.template.response import TemplateResponse

logger = logging.getLogger("jwtex.admin")


_NOT_LOOKUPS = frozenset({*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG})  # search, order, page, … — not filters


class _RefusedFilter(Exception):
    """A changelist's query string asks for what the list does not offer, or cannot be read."""


def _filter_parameters(path: str, field, filter_class) -> set[str]:
    """The query parameters Django's filter for ``path`` reads (its ``expected_parameters()``)."""
    if filter_class is admin.EmptyFieldListFilter:
        return {f"{path}__isempty"}
    if field.is_relation:  # RelatedFieldListFilter, RelatedOnlyFieldListFilter, TenantListFilter (+ its search)
        return {
            f"{path}__{field.target_field.name}__exact",
            f"{path}__isnull",
            *getattr(filter_class, "extra_parameters", ()),
        }
    if isinstance(field, models.BooleanField) or field.choices:  # BooleanFieldListFilter, ChoicesFieldListFilter
        return {f"{path}__exact", f"{path}__isnull"}
    if isinstance(field, models.DateField):  # DateFieldListFilter (DateTimeField too)
        return {f"{path}__gte", f"{path}__lt", f"{path}__isnull"}
    return {path, f"{path}__exact", f"{path}__isnull"}  # AllValuesFieldListFilter (its value, spelt either way)


class DeclaredLookupsOnlyMixin:
    """A ``ModelAdmin`` whose list filters by what it declares, and nothing else.

    Django's own ``lookup_allowed`` lets a query string filter by any lookup on any of the
    model's own fields, shown or not: ``?private_key_encrypted__startswith=gAAA`` turned the
    keys list into a prefix oracle on the stored ciphertext, for auditors too. Here the list
    accepts exactly the parameters of its ``list_filter`` entries, its ``date_hierarchy`` and
    exact matches on its ``search_fields`` (less than ``?q=`` finds already); anything else
    is a ``400`` page naming the parameters refused. A value a filter cannot read
    (``?created_at__gte=yesterday``, a date past year 9999, a NUL byte PostgreSQL refuses) is a
    ``400`` page too — never a 500, and never Django's ``?e=1`` redirect, which drops the
    filters without a word (and on a second try shows a page blaming the database)."""

    def declared_lookups(self, request) -> frozenset[str]:
        allowed: set[str] = set()
        for item in self.get_list_filter(request):
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                allowed.add(item.parameter_name)
                continue
            path, filter_class = (item[0], item[1]) if isinstance(item, (list, tuple)) else (item, None)
            allowed |= _filter_parameters(path, get_fields_from_path(self.model, path)[-1], filter_class)
        if self.date_hierarchy:
            allowed |= {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}
        allowed |= {name.lstrip("^=@") for name in self.get_search_fields(request)}  # exact: less than ?q= finds
        return frozenset(allowed)

    def lookup_allowed(self, lookup, value, request=None):
        if request is None:  # Django always passes it (5.x); without it nothing is allowed
            return False
        cache = request.__dict__.setdefault("_jwtex_declared_lookups", {})  # once per list and request
        if self.model not in cache:
            cache[self.model] = self.declared_lookups(request)
        return lookup in cache[self.model]

    def get_changelist_instance(self, request):
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()):
            raise _RefusedFilter("the address holds a NUL character")
        try:
            return super().get_changelist_instance(request)
        except DisallowedModelAdminLookup:
            unknown = sorted(name[:64] for name in set(request.GET) - self.declared_lookups(request) - _NOT_LOOKUPS)[:5]
            logger.warning(
                "admin list filter refused", extra={"jwtex": {"model": self.model._meta.label, "parameters": unknown}}
            )
            raise _RefusedFilter(f"this list cannot be filtered by {', '.join(unknown) or 'that'}") from None
        # (DataError: a value only the database refuses; the admin runs in autocommit, so it is over.)
        except (IncorrectLookupParameters, ValidationError, OverflowError, DataError) as exc:
            cause = exc.__cause__ or exc
            raise _RefusedFilter(f"a filter's value cannot be read ({type(cause).__name__})") from None

    def changelist_view(self, request, extra_context=None):
        try:
            return super().changelist_view(request, extra_context)
        except _RefusedFilter as exc:
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Invalid filter",
                "problem": str(exc),
            }
            return TemplateResponse(request, "jwtex/invalid_filter.html", context, status=400)
