"""How a repo appears in URLs, and the download route that the fast path answers before the URL resolver."""

REPO = r"(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"
RESOLVE_ROUTE = rf"^{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
