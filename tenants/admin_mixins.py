"""Tenant scoping for the admin (docs/design/layout.md#the-tenant-is-explicit): who may see and do what, per membership.

Every admin screen asks the same three questions: which tenants does this user belong to,
with which role, and does that role allow this action here. The answers come from
``Membership`` rows only — never from Django's ``auth.Permission`` rows — so a staff user
with no membership sees nothing, and a role change takes effect on the next request.

Roles (docs/operators.md#roles):

- ``owner``: everything in the tenant, including its members, its settings and key revocation;
- ``operator``: issuers, rules, key rotation and "fetch keys now";
- ``auditor``: read-only, including the audit log.

Superusers see and may do everything in every tenant.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import build_q_object_from_lookup_parameters
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models import Model, Q, QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpRequest

from exchange.core import strict_json

from .admin_lookups import DeclaredLookupsOnlyMixin
from .models import Membership, Role, Tenant

ALL_ROLES: frozenset[str] = frozenset(Role.values)
VIEW = ALL_ROLES
CONFIGURE = frozenset({Role.OWNER, Role.OPERATOR})  # issuers, rules, rotation, fetching keys
OWN = frozenset({Role.OWNER})  # members, tenant settings, revocation
NOBODY: frozenset[str] = frozenset()


def user_roles(request: HttpRequest) -> dict[int, str]:
    """``{tenant id: role}`` of the request's user; read once per request."""
    roles = getattr(request, "_jwtex_roles", None)
    if roles is None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not user.is_active:
            roles = {}
        else:
            roles = dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))
        request._jwtex_roles = roles
    return roles


def is_superuser(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_superuser)


def tenant_ids_with(request: HttpRequest, roles: Collection[str]) -> set[int] | None:
    """The tenants where the user holds one of ``roles``; ``None`` means every tenant (superuser)."""
    if is_superuser(request):
        return None
    return {tenant_id for tenant_id, role in user_roles(request).items() if role in roles}


def has_role(request: HttpRequest, tenant_id: int | None, roles: Collection[str]) -> bool:
    if is_superuser(request):
        return True
    if tenant_id is None:
        return False
    return user_roles(request).get(tenant_id) in roles


def has_any_role(request: HttpRequest, roles: Collection[str]) -> bool:
    return is_superuser(request) or any(role in roles for role in user_roles(request).values())


def scope(queryset: QuerySet, request: HttpRequest, roles: Collection[str], *, path: str = "tenant") -> QuerySet:
    """``queryset`` narrowed to rows of tenants where the user holds one of ``roles``."""
    ids = tenant_ids_with(request, roles)
    if ids is None:
        return queryset
    return queryset.filter(**{f"{path}__in": ids})


def tenants_for(request: HttpRequest, roles: Collection[str]) -> QuerySet:
    return scope(Tenant.objects.all(), request, roles, path="pk")


def tenant_get_or_404(request: HttpRequest, tenant_id: object, roles: Collection[str]) -> Tenant:
    """The tenant if the user holds one of ``roles`` there; 404 otherwise — the same answer
    whether it does not exist or belongs to someone else, so ids reveal nothing."""
    try:
        pk = int(str(tenant_id))
    except (TypeError, ValueError):
        raise Http404("No such tenant.") from None
    tenant = tenants_for(request, roles).filter(pk=pk).first()
    if tenant is None:
        raise Http404("No such tenant.")
    return tenant


TENANT_LINKS = 10  # more tenants than this, and a choice of tenant is a search box
TENANT_SEARCH_VAR = "tenant_q"


def tenants_matching(
    tenants: QuerySet, search: str, *, keep: Collection[int] = (), total: int | None = None
) -> QuerySet:
    """At most ``TENANT_LINKS`` of ``tenants`` (``total`` of them, if counted already) by slug: all
    of them while there are no more, else those whose slug or name contains ``search`` (none
    without one), and those in ``keep`` (the chosen ones). A list of 10,000 tenants is never sent."""
    tenants = tenants.order_by("slug")
    if (tenants.count() if total is None else total) > TENANT_LINKS:
        wanted = Q(pk__in=[int(pk) for pk in keep if str(pk).isdigit()])
        if search:
            wanted |= Q(slug__icontains=search) | Q(name__icontains=search)
        tenants = tenants.filter(wanted)
    return tenants[:TENANT_LINKS]


class TenantListFilter(admin.RelatedFieldListFilter):
    """The tenant filter of a scoped list: its choices come from the tenants table (the user's
    tenants), never from the listed rows (no DISTINCT over them), and it scales with tenants: up
    to ``TENANT_LINKS`` it is a link per tenant, beyond that a search box (part of a slug or a
    name) with the first matches as links."""

    template = "admin/jwtex_tenant_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.search = str((params.get(TENANT_SEARCH_VAR) or [""])[-1]).strip()[:100]
        self.total = 0
        super().__init__(field, request, params, model, model_admin, field_path)
        if any(not str(value).isdigit() for value in self.lookup_val or ()):  # a 400, shown or not
            raise IncorrectLookupParameters(f"not a tenant: {self.lookup_val!r:.40}")

    extra_parameters = (TENANT_SEARCH_VAR,)  # besides the relation's own (admin_lookups reads it too)

    def expected_parameters(self):
        return [*super().expected_parameters(), *self.extra_parameters]

    @property
    def searchable(self) -> bool:
        return self.total > TENANT_LINKS

    def field_choices(self, field, request, model_admin):
        tenants = tenants_for(request, model_admin.view_roles)
        self.total = tenants.count()
        shown = tenants_matching(tenants.only("pk", "slug"), self.search, keep=self.lookup_val or (), total=self.total)
        return [(tenant.pk, tenant.slug) for tenant in shown]

    def has_output(self):
        return self.total > 1

    def queryset(self, request, queryset):
        lookups = {k: v for k, v in self.used_parameters.items() if k != TENANT_SEARCH_VAR}
        try:
            return queryset.filter(build_q_object_from_lookup_parameters(lookups)) if lookups else queryset
        except (ValueError, ValidationError) as exc:  # as Django's own filters: "?tenant__id__exact=abc"
            raise IncorrectLookupParameters(exc) from exc

    def choices(self, changelist):
        keep = {TENANT_SEARCH_VAR, self.lookup_kwarg, self.lookup_kwarg_isnull}
        self.hidden_params = [
            (k, v) for k, values in changelist.get_filters_params().items() if k not in keep for v in values
        ] + [(k, v) for k, v in changelist.params.items() if k == "q"]
        yield from super().choices(changelist)


class StrictJSONFormField(forms.JSONField):
    """Django's JSON form field read by the project's strict decoder (exchange.core.strict_json):
    a repeated member, ``NaN`` or nesting deeper than any configuration needs is a form error,
    never a 500 (Django's own field lets the decoder's ``RecursionError`` through)."""

    def to_python(self, value):
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            return strict_json.loads(value)
        except strict_json.DuplicateMemberError as exc:
            raise ValidationError(f"Not valid JSON: the member {exc.name!r} appears twice.", code="invalid") from None
        except RecursionError:
            raise ValidationError(
                f"Not valid JSON: nested deeper than {strict_json.MAX_DEPTH}.", code="invalid"
            ) from None
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}", code="invalid") from None

    def bound_data(self, data, initial):
        if self.disabled or data is None:
            return super().bound_data(data, initial)
        try:
            return strict_json.loads(data)
        except (ValueError, RecursionError):
            return InvalidJSONInput(data)


class TenantScopedAdminMixin(DeclaredLookupsOnlyMixin):
    """A ``ModelAdmin`` whose rows, choices, actions and object URLs follow memberships.

    Subclasses say where the tenant is (``tenant_path``) and which roles may view, add,
    change and delete. An object of a tenant the user does not belong to is not in
    ``get_queryset``, so its URLs answer 404 (``get_object`` raises rather than redirect).
    """

    tenant_path = "tenant"
    formfield_overrides = {models.JSONField: {"form_class": StrictJSONFormField}}
    view_roles: frozenset[str] = VIEW
    add_roles: frozenset[str] = CONFIGURE
    change_roles: frozenset[str] = CONFIGURE
    delete_roles: frozenset[str] = CONFIGURE

    # --- where the tenant is ---------------------------------------------------------------

    def tenant_id_of(self, obj: Model) -> int | None:
        return getattr(obj, f"{self.tenant_path}_id", None)

    # --- rows --------------------------------------------------------------------------------

    def get_queryset(self, request):
        return scope(super().get_queryset(request), request, self.view_roles, path=self.tenant_path)

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Django would redirect to the index with "doesn't exist"; say 404 instead, the
            # same for a missing row and for another tenant's row.
            raise Http404("No such object.")
        return obj

    # --- permissions: from memberships, not from auth.Permission rows ------------------------

    def _allowed(self, request, obj, roles: Collection[str]) -> bool:
        if obj is None:
            return has_any_role(request, roles)
        return has_role(request, self.tenant_id_of(obj), roles)

    def has_module_permission(self, request):
        return has_any_role(request, self.view_roles)

    def has_view_permission(self, request, obj=None):
        return self._allowed(request, obj, self.view_roles) or self.has_change_permission(request, obj)

    def has_add_permission(self, request, *args):
        return has_any_role(request, self.add_roles)

    def has_change_permission(self, request, obj=None):
        return self._allowed(request, obj, self.change_roles)

    def has_delete_permission(self, request, obj=None):
        return self._allowed(request, obj, self.delete_roles)

    # --- choices ----------------------------------------------------------------------------

    def writable_tenants(self, request, obj=None) -> QuerySet:
        return tenants_for(request, self.change_roles if obj is not None else self.add_roles)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.related_model is Tenant:
            kwargs["queryset"] = self.writable_tenants(request)
            if "widget" not in kwargs and kwargs["queryset"].count() > TENANT_LINKS:
                # A search as you type (the tenants' own admin answers it), not a <select> of them all.
                kwargs["widget"] = AutocompleteSelect(db_field, self.admin_site)
        elif _is_tenant_owned(db_field.related_model):
            kwargs["queryset"] = scope(db_field.related_model._default_manager.all(), request, self.add_roles)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if _is_tenant_owned(db_field.related_model):
            kwargs["queryset"] = scope(db_field.related_model._default_manager.all(), request, self.add_roles)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        if self.tenant_path == "tenant" and "tenant" not in initial:
            tenants = list(self.writable_tenants(request).values_list("pk", flat=True)[:2])
            if len(tenants) == 1:
                initial["tenant"] = tenants[0]
        return initial

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        # A row never moves to another tenant: its references (rules → issuers, audit rows)
        # would cross tenants.
        if obj is not None and self.tenant_path == "tenant" and "tenant" not in fields:
            fields.insert(0, "tenant")
        return fields

    def get_list_filter(self, request):
        # The stock related filter lists every row of the related model: the tenant filter lists
        # the user's tenants (from the tenants table, searchable), other relations those in use.
        return [
            (name, TenantListFilter if name == "tenant" else admin.RelatedOnlyFieldListFilter)
            if isinstance(name, str) and self._is_relation(name)
            else name
            for name in super().get_list_filter(request)
        ]

    def _is_relation(self, name: str) -> bool:
        try:
            field = self.model._meta.get_field(name)
        except Exception:  # noqa: BLE001 - a lookup path or a custom filter: leave it alone
            return False
        return bool(field.is_relation and field.many_to_one)

    # --- writes -------------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        # The form's choices already hold only writable tenants; this is the second lock.
        roles = self.change_roles if change else self.add_roles
        if not has_role(request, self.tenant_id_of(obj), roles):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        super().save_model(request, obj, form, change)


def _is_tenant_owned(model: type[Model]) -> bool:
    try:
        field = model._meta.get_field("tenant")
    except FieldDoesNotExist:
        return False
    return field.is_relation and field.related_model is Tenant


def scoped_actions_queryset(request, queryset: QuerySet, roles: Iterable[str], *, path: str = "tenant") -> QuerySet:
    """For admin actions: the selected rows the user may act on with ``roles``."""
    return scope(queryset, request, frozenset(roles), path=path)
