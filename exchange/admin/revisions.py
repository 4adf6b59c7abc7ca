"""A tenant's revisions in the admin (docs/operations.md#revisions): the list, each revision's diff to the one
before, and "Restore revision N" behind a confirmation page that shows the diff the restore
will make. Everyone with a role in the tenant reads them; owners and operators restore (403 for
an auditor); 404 for a user without a role there. A restore is ``jwtex_apply`` of the revision's
document (exchange.config.revision_documents), so nothing here writes a row.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from tenants.admin_mixins import CONFIGURE, VIEW, has_role, tenant_get_or_404

from ..config.revision_documents import revision_restore, revision_restore_preview
from ..config.schema import ConfigError
from ..services.revisions import revision_diff, revision_get, revision_list

PER_PAGE = 50


def _render(request, template: str, *, model_admin, tenant, status: int = 200, **extra) -> TemplateResponse:
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        "tenant": tenant,
        "can_restore": has_role(request, tenant.pk, CONFIGURE),
        **extra,
    }
    return TemplateResponse(request, template, context, status=status)


def _revision_or_404(tenant, number: int):
    revision = revision_get(tenant=tenant, number=number)
    if revision is None:
        raise Http404("No such revision.")
    return revision


def _list_url(tenant) -> str:
    return reverse("admin:tenants_tenant_revisions", args=[tenant.pk])


def revision_list_view(request, object_id, *, model_admin):
    tenant = tenant_get_or_404(request, object_id, VIEW)
    page = Paginator(revision_list(tenant=tenant), PER_PAGE).get_page(request.GET.get("page"))
    latest = revision_list(tenant=tenant).values_list("number", flat=True).first()
    return _render(
        request,
        "jwtex/revisions.html",
        model_admin=model_admin,
        tenant=tenant,
        title=f"Revisions of {tenant.slug}",
        page=page,
        latest=latest,
    )


def revision_detail_view(request, object_id, number: int, *, model_admin):
    tenant = tenant_get_or_404(request, object_id, VIEW)
    revision = _revision_or_404(tenant, number)
    previous = revision_get(tenant=tenant, number=number - 1)
    diff = revision_diff(
        before=previous.document if previous else "",
        after=revision.document,
        before_label=f"revision {number - 1}" if previous else "(nothing)",
        after_label=f"revision {number}",
    )
    latest = revision_list(tenant=tenant).values_list("number", flat=True).first()
    return _render(
        request,
        "jwtex/revision.html",
        model_admin=model_admin,
        tenant=tenant,
        title=f"Revision {number} of {tenant.slug}",
        revision=revision,
        previous=previous,
        diff=diff,
        latest=latest,
    )


def revision_restore_view(request, object_id, number: int, *, model_admin):
    tenant = tenant_get_or_404(request, object_id, VIEW)
    if not has_role(request, tenant.pk, CONFIGURE):
        raise PermissionDenied
    revision = _revision_or_404(tenant, number)
    now = timezone.now()
    if request.method == "POST":
        try:
            report = revision_restore(tenant=tenant, number=number, author=request.user.get_username(), now=now)
        except ConfigError as exc:
            return _restore_page(request, model_admin, tenant, revision, errors=exc.errors, status=400)
        if report.changed:
            messages.success(
                request, f"Restored revision {number} of {tenant.slug}: " + "; ".join(report.changes) + "."
            )
        else:
            messages.info(request, f"Revision {number} is the current configuration of {tenant.slug}: nothing changed.")
        return HttpResponseRedirect(_list_url(tenant))
    try:
        diff, report = revision_restore_preview(tenant=tenant, number=number, now=now)
    except ConfigError as exc:
        return _restore_page(request, model_admin, tenant, revision, errors=exc.errors)
    return _restore_page(request, model_admin, tenant, revision, diff=diff, report=report)


def _restore_page(request, model_admin, tenant, revision, *, diff=None, report=None, errors=None, status=200):
    return _render(
        request,
        "jwtex/revision_restore.html",
        model_admin=model_admin,
        tenant=tenant,
        title=f"Restore revision {revision.number} of {tenant.slug}?",
        revision=revision,
        diff=diff or [],
        report=report,
        errors=errors or [],
        cancel_url=_list_url(tenant),
        status=status,
    )
