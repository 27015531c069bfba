from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from access import api as access_api
from access import hf_views as access_hf
from access import views as access_views
from distribution import hf_publish, hf_reading, link_views, xet_views
from distribution import hf_views as distribution_hf
from hub.routes import REPO, RESOLVE_ROUTE
from portal import anchor_views, audit_views, metrics, publishing_views, trace_views, views
from verification import views as verification_views

urlpatterns = [
    path("", views.home, name="home"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/login/", views.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("account/", access_views.account, name="account"),
    path("requests/", access_views.my_requests, name="my-requests"),
    path("review/", access_views.review_queue, name="review-queue"),
    path("staff/trace-leak/", trace_views.trace_leak_page, name="trace-leak"),
    path("audit/downloads/", audit_views.downloads, name="audit-downloads"),
    re_path(r"^audit/downloads\.(?P<format>csv|json)$", audit_views.downloads, name="audit-downloads-export"),
    re_path(r"^account/downloads\.(?P<format>csv|json)$", audit_views.my_downloads, name="my-downloads"),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # REST API
    path("api/v1/access-requests/", access_api.AccessRequestList.as_view(), name="api-access-requests"),
    path("api/v1/counts/", access_api.RequestCounts.as_view(), name="api-counts"),
    path("api/v1/audit/downloads/", audit_views.DownloadAudit.as_view(), name="api-audit-downloads"),
    path("api/v1/me/downloads/", audit_views.MyDownloads.as_view(), name="api-my-downloads"),
    path("api/v1/signing-key.pem", verification_views.signing_key, name="signing-key"),
    path("api/v1/signing-keys/", verification_views.signing_keys, name="signing-keys"),
    path("api/v1/audit/anchors/", anchor_views.anchors, name="audit-anchors"),
    re_path(
        r"^api/v1/signing-keys/(?P<fingerprint>[0-9a-fA-F]{64})\.pem$",
        verification_views.signing_key_by_fingerprint,
        name="signing-key-by-fingerprint",
    ),
    re_path(
        rf"^api/v1/repos/{REPO}/license-acceptance/$",
        access_api.LicenseAcceptance.as_view(),
        name="api-license-acceptance",
    ),
    # Hugging Face Hub protocol
    path("api/whoami-v2", distribution_hf.whoami, name="hf-whoami"),
    path("api/models", hf_reading.models, name="hf-models"),
    re_path(rf"^api/models/{REPO}$", distribution_hf.model_info, name="hf-model-info"),
    re_path(rf"^api/models/{REPO}/auth-check$", hf_reading.auth_check, name="hf-auth-check"),
    re_path(rf"^api/models/{REPO}/paths-info/(?P<rev>[^/]+)$", hf_reading.paths_info, name="hf-paths-info"),
    re_path(rf"^api/models/{REPO}/refs$", hf_reading.refs, name="hf-refs"),
    re_path(rf"^api/models/{REPO}/commits/(?P<rev>[^/]+)$", hf_reading.commits, name="hf-commits"),
    re_path(rf"^api/models/{REPO}/revision/(?P<rev>[^/]+)$", distribution_hf.model_info, name="hf-revision"),
    re_path(rf"^api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", distribution_hf.tree, name="hf-tree"),
    re_path(
        rf"^api/models/{REPO}/user-access-request/(?P<state>pending|accepted|rejected)$",
        access_hf.list_requests,
        name="hf-access-requests",
    ),
    re_path(rf"^api/models/{REPO}/user-access-request/handle$", access_hf.handle_request, name="hf-access-handle"),
    re_path(rf"^api/models/{REPO}/user-access-request/grant$", access_hf.grant, name="hf-access-grant"),
    # Hugging Face Hub protocol: publishing
    path("api/repos/create", hf_publish.create_repo, name="hf-create-repo"),
    re_path(rf"^api/models/{REPO}/preupload/(?P<rev>[^/]+)$", hf_publish.preupload, name="hf-preupload"),
    re_path(rf"^api/models/{REPO}/commit/(?P<rev>[^/]+)$", hf_publish.commit, name="hf-commit"),
    re_path(rf"^api/models/{REPO}/xet-write-token/(?P<rev>[^/]+)$", hf_publish.xet_write_token, name="hf-xet"),
    re_path(rf"^{REPO}\.git/info/lfs/objects/batch$", hf_publish.lfs_batch, name="hf-lfs-batch"),
    # Xet uploads: the CAS calls, under the casUrl that xet-write-token gives
    re_path(rf"^xet/{REPO}/$", xet_views.not_offered, {"call": "the CAS root"}, name="xet-root"),
    re_path(rf"^xet/{REPO}/v1/xorbs/(?P<prefix>[^/]+)/(?P<xorb_hash>[^/]+)$", xet_views.xorb, name="xet-xorb"),
    re_path(rf"^xet/{REPO}/v1/shards$", xet_views.shard, name="xet-shard"),
    re_path(rf"^xet/{REPO}/v1/chunks/(?P<prefix>[^/]+)/(?P<chunk_hash>[^/]+)$", xet_views.chunk, name="xet-chunk"),
    re_path(rf"^xet/{REPO}/(?P<call>.+)$", xet_views.not_offered, name="xet-not-offered"),
    path("api/lfs/<str:signed>/complete", hf_publish.lfs_complete, name="lfs-complete"),
    path("api/lfs/<str:signed>/verify", hf_publish.lfs_verify, name="lfs-verify"),
    path("api/lfs/<str:signed>/object", hf_publish.lfs_object, name="lfs-object"),
    path("api/lfs/<str:signed>/part/<int:number>", hf_publish.lfs_part, name="lfs-part"),
    re_path(RESOLVE_ROUTE, distribution_hf.resolve, name="hf-resolve"),
    path("files/<str:ticket>/<str:filename>", distribution_hf.ticket_download, name="download-ticket"),
    path("dl/<str:signed>/<path:path>", link_views.link_download, name="download-link"),
    re_path(rf"^api/v1/repos/{REPO}/revisions/(?P<rev>[^/]+)/manifest$", link_views.manifest, name="api-manifest"),
    re_path(
        rf"^api/v1/repos/{REPO}/revisions/(?P<rev>[^/]+)/SHA256SUMS$", link_views.sha256sums, name="api-sha256sums"
    ),
    re_path(
        rf"^api/v1/repos/{REPO}/revisions/(?P<rev>[^/]+)/download\.sh$",
        link_views.download_script,
        name="api-download-script",
    ),
    re_path(
        rf"^api/v1/repos/{REPO}/revisions/(?P<commit>[0-9a-f]{{40}})/progress$",
        publishing_views.revision_progress,
        name="api-revision-progress",
    ),
    re_path(rf"^{REPO}$", views.repo_page, name="repo"),
    re_path(rf"^{REPO}/revisions/$", publishing_views.revisions_page, name="repo-revisions"),
    re_path(rf"^{REPO}/revisions/(?P<commit>[0-9a-f]{{40}})$", views.revision_page, name="revision"),
    re_path(
        rf"^{REPO}/revisions/(?P<commit>[0-9a-f]{{40}})/release$", publishing_views.release, name="revision-release"
    ),
    # The commit URL the Hub client is given (it reads the repo from what comes before /commit/)
    re_path(rf"^{REPO}/commit/(?P<commit>[0-9a-f]{{40}})$", RedirectView.as_view(pattern_name="revision")),
]

handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
