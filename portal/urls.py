from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from access import api as access_api
from access import hf_views as access_hf
from distribution import hf_views as distribution_hf
from portal import views

REPO = r"(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"

urlpatterns = [
    path("", views.home, name="home"),
    path("health", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # REST API
    path("api/v1/access-requests/", access_api.AccessRequestList.as_view(), name="api-access-requests"),
    # Hugging Face Hub protocol
    path("api/whoami-v2", distribution_hf.whoami, name="hf-whoami"),
    re_path(rf"^api/models/{REPO}$", distribution_hf.model_info, name="hf-model-info"),
    re_path(rf"^api/models/{REPO}/revision/(?P<rev>[^/]+)$", distribution_hf.model_info, name="hf-revision"),
    re_path(rf"^api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", distribution_hf.tree, name="hf-tree"),
    re_path(
        rf"^api/models/{REPO}/user-access-request/(?P<state>pending|accepted|rejected)$",
        access_hf.list_requests,
        name="hf-access-requests",
    ),
    re_path(rf"^api/models/{REPO}/user-access-request/handle$", access_hf.handle_request, name="hf-access-handle"),
    re_path(rf"^api/models/{REPO}/user-access-request/grant$", access_hf.grant, name="hf-access-grant"),
    re_path(rf"^{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", distribution_hf.resolve, name="hf-resolve"),
    path("files/<str:ticket>/<str:filename>", distribution_hf.ticket_download, name="download-ticket"),
    re_path(rf"^{REPO}$", views.repo_page, name="repo"),
    re_path(rf"^{REPO}/revisions/(?P<commit>[0-9a-f]{{40}})$", views.revision_page, name="revision"),
]
