from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),  # there is no other front page
    path("admin/", admin.site.urls),
    path("", include("exchange.api.urls")),
]
