"""Memberships in the admin, scoped by membership (tenants.admin_mixins): owners add people
to their tenant. (The tenant's own screen is exchange.admin.tenants: it needs the services.)
Django's own user and group lists (superusers only) filter by what they declare, like ours."""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied

from .admin_lookups import DeclaredLookupsOnlyMixin
from .admin_mixins import OWN, TenantScopedAdminMixin, has_role
from .models import Membership, MembershipSource, Role
from .services import membership_add, membership_role_change_errors, user_get_by_username


class MembershipForm(forms.ModelForm):
    username = forms.CharField(max_length=150, required=False, help_text="The exact username of an existing account.")

    class Meta:
        model = Membership
        fields = ["tenant", "role"]

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None:
            username = cleaned.get("username", "")
            if not username:
                self.add_error("username", "Whom to add: a username.")
            else:
                try:
                    user = user_get_by_username(username=username)
                except forms.ValidationError as exc:
                    self.add_error("username", exc)
                else:
                    tenant = cleaned.get("tenant")
                    if tenant is not None and Membership.objects.filter(tenant=tenant, user=user).exists():
                        self.add_error("username", f"{user} is already a member of {tenant}.")
                    self.instance.user = user
        else:
            problem = membership_role_change_errors(membership=self.instance, new_role=cleaned.get("role"))
            if problem:
                self.add_error("role", problem)
        return cleaned


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = frozenset({Role.OWNER, Role.AUDITOR})
    add_roles = OWN
    change_roles = OWN
    delete_roles = OWN

    form = MembershipForm
    list_display = ["user", "tenant", "role", "source", "created_at"]
    list_filter = ["role", "source", "tenant"]
    list_select_related = ["tenant", "user"]
    search_fields = ["user__username", "tenant__slug"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "username", "role"]
        return ["tenant", "user", "role", "source", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["user", "source", "created_at"]
            if obj.source == MembershipSource.IDP:
                # The provider's claim sets it again at each sign-in: a change here would not last.
                # (Deleting it revokes the role until the next sign-in.)
                fields.append("role")
        return fields

    def has_delete_permission(self, request, obj=None):
        if obj is not None and membership_role_change_errors(membership=obj, new_role=None):
            return False  # the last owner stays
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        if not has_role(request, obj.tenant_id, self.add_roles):
            raise PermissionDenied
        saved = membership_add(tenant=obj.tenant, user=obj.user, role=obj.role)
        obj.pk = saved.pk
        obj.created_at = saved.created_at


# Every list of the admin accepts only the filters it declares (tenants.admin_lookups), Django's too.
for _model, _base in ((get_user_model(), UserAdmin), (Group, GroupAdmin)):
    if admin.site.is_registered(_model) and not isinstance(admin.site._registry[_model], DeclaredLookupsOnlyMixin):
        admin.site.unregister(_model)
        admin.site.register(_model, type(_base.__name__, (DeclaredLookupsOnlyMixin, _base), {}))
