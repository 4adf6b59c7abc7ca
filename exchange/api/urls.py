from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import operations, views

urlpatterns = [
    path("healthz", operations.healthz, name="healthz"),
    path("readyz", operations.readyz, name="readyz"),
    path("metrics", operations.metrics, name="metrics"),
    path("t/<str:slug>/.well-known/openid-configuration", views.discovery_view, name="discovery"),
    path("t/<str:slug>/.well-known/jwks.json", views.jwks_view, name="jwks"),
    path("t/<str:slug>/.well-known/jwks", views.jwks_view, name="jwks-legacy"),
    path("t/<str:slug>/exchange", views.RawExchangeView.as_view(), name="raw-exchange"),
    path("t/<str:slug>/token", views.TokenExchangeView.as_view(), name="token-exchange"),
    re_path(r"^t/(?P<slug>[^/]+)/(?P<rest>.*)$", views.tenant_path_not_found, name="tenant-not-found"),
    path("api/v1/t/<str:slug>/exchange", views.ExchangeAPIView.as_view(), name="api-exchange"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
