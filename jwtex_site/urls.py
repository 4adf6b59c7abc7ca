from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from jwtex_site.sso import views as sso

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),  # there is no other front page
    # The admin's login and logout with single sign-on (jwtex_site/sso), before the admin's own.
    path("admin/login/", sso.admin_login_view),
    path("admin/logout/", sso.admin_logout_view),
    path("admin/sso/start/", sso.SignOnStartView.as_view(), name="jwtex_sso_start"),
    path("admin/sso/callback/", sso.SignOnCallbackView.as_view(), name="jwtex_sso_callback"),
    path("admin/", admin.site.urls),
    path("", include("exchange.api.urls")),
]
