from django.urls import include, path

from jwtex_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [
    path("upstream/", include("oidc_provider.urls", namespace="oidc_provider")),
    *site_urlpatterns,
]
