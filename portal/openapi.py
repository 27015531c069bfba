"""The parts of the REST API under /api/v1/ that are plain Django views (download links, a revision's
progress and the signing keys), described in the OpenAPI schema beside the DRF views drf-spectacular
finds on its own."""

REPO_PARAMETERS = [
    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": text}
    for name, text in (
        ("org", "the repo's organisation"),
        ("name", "the repo's name"),
        ("rev", "`main`, a tag, or a 40-hex commit"),
    )
]
ERROR = {
    "description": "refused; the JSON body and X-Error-Message say why and what to do",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
}
REFUSALS = {"401": ERROR, "403": ERROR, "404": ERROR, "429": ERROR}
BEARER = [{"bearerToken": []}, {"cookieAuth": []}]
PEM = {"application/x-pem-file": {"schema": {"type": "string"}}}


def download_operation(operation_id: str, summary: str, media_type: str, schema: dict) -> dict:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["downloads"],
            "parameters": REPO_PARAMETERS,
            "security": BEARER,
            "responses": {"200": {"description": summary, "content": {media_type: {"schema": schema}}}, **REFUSALS},
        }
    }


STRING, INTEGER = {"type": "string"}, {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}


def object_of(**properties) -> dict:
    return {"type": "object", "properties": properties}


def list_of(**properties) -> dict:
    return {"type": "array", "items": object_of(**properties)}


ANCHOR_PAGE = object_of(
    anchors=list_of(
        name=STRING,
        sequence=INTEGER,
        hash=STRING,
        at=TIME,
        key={"type": "string", "description": "the signing key's fingerprint"},
        document={"type": "string", "description": "the signed document, as stored: keep this"},
    ),
    next={"type": "string", "nullable": True},
)
MANIFEST = object_of(
    repo=STRING,
    revision=STRING,
    expires_at=TIME,
    max_uses=INTEGER,
    renew_at=STRING,
    files=list_of(path=STRING, size=INTEGER, sha256=STRING, url=STRING),
)
PROGRESS = object_of(
    repo=STRING,
    commit=STRING,
    tag=STRING,
    state={"type": "string", "description": "uploaded, verifying, verified, failed, released, withdrawn, ..."},
    state_label=STRING,
    stage={"type": "string", "description": "while verifying: checks, judging, smoke-queued or smoke"},
    stage_words=STRING,
    settled={"type": "boolean", "description": "nothing more happens until a person acts"},
    releasable={"type": "boolean"},
    failure_reason=STRING,
    published_at=TIME,
    verification_started_at={**TIME, "nullable": True},
    verified_at={**TIME, "nullable": True},
    released_at={**TIME, "nullable": True},
    files=object_of(
        counts=object_of(pending=INTEGER, checking=INTEGER, done=INTEGER),
        list=list_of(
            path=STRING,
            size=INTEGER,
            state=STRING,
            worker={"type": "string", "description": "the worker checking it, or that checked it"},
            claims=INTEGER,
            sha256=STRING,
            finished_at={**TIME, "nullable": True},
            unreadable=STRING,
        ),
    ),
    checks=list_of(name=STRING, status=STRING, code=STRING, file=STRING, message=STRING),
    run={**object_of(kind=STRING, started_at=TIME), "nullable": True},
    smoke={"type": "object", "nullable": True, "description": "what the smoke pass saw: device, dtype, tokens"},
    step={"type": "string", "description": "changes whenever anything above does: compare it to poll cheaply"},
)
PATHS = {
    "/api/v1/repos/{org}/{name}/revisions/{commit}/progress": {
        "get": {
            "operationId": "revision_progress",
            "summary": "how far the verification of a revision has got (for its publishers: the publish scope)",
            "tags": ["publishing"],
            "parameters": [
                *REPO_PARAMETERS[:2],
                {
                    "name": "commit",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
                    "description": "the revision's commit",
                },
            ],
            "security": BEARER,
            "responses": {
                "200": {"description": "the progress", "content": {"application/json": {"schema": PROGRESS}}},
                "401": ERROR,
                "403": ERROR,
                "404": ERROR,
            },
        }
    },
    "/api/v1/repos/{org}/{name}/revisions/{rev}/manifest": download_operation(
        "download_manifest",
        "every file of the revision with its size, sha256 and a fresh download link",
        "application/json",
        MANIFEST,
    ),
    "/api/v1/repos/{org}/{name}/revisions/{rev}/SHA256SUMS": download_operation(
        "download_sha256sums", "the revision's digests, as `sha256sum -c` reads them", "text/plain", {"type": "string"}
    ),
    "/api/v1/repos/{org}/{name}/revisions/{rev}/download.sh": download_operation(
        "download_script",
        "a script that fetches every file with curl or wget and checks it",
        "text/x-shellscript",
        {"type": "string"},
    ),
    "/api/v1/signing-key.pem": {
        "get": {
            "operationId": "signing_key_current",
            "summary": "the public key that signs new releases",
            "tags": ["signing"],
            "security": [{}],
            "responses": {"200": {"description": "the key", "content": PEM}, "404": ERROR},
        }
    },
    "/api/v1/signing-keys/": {
        "get": {
            "operationId": "signing_keys_list",
            "summary": "every key that has signed a release, retired ones included",
            "tags": ["signing"],
            "security": [{}],
            "responses": {
                "200": {
                    "description": "the keys",
                    "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
                }
            },
        }
    },
    "/api/v1/audit/anchors/": {
        "get": {
            "operationId": "audit_anchors_list",
            "summary": "the audit chain's signed anchors, oldest first, for auditors to keep copies of",
            "tags": ["audit"],
            "security": [{}],
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "only anchors of events after this sequence number (the `next` link's cursor)",
                }
            ],
            "responses": {
                "200": {
                    "description": "a page of anchors; `next` is the following page's address, or null",
                    "content": {"application/json": {"schema": ANCHOR_PAGE}},
                },
                "400": ERROR,
            },
        }
    },
    "/api/v1/signing-keys/{fingerprint}.pem": {
        "get": {
            "operationId": "signing_key_by_fingerprint",
            "summary": "a key by the fingerprint a model.sig names",
            "tags": ["signing"],
            "security": [{}],
            "parameters": [
                {
                    "name": "fingerprint",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                }
            ],
            "responses": {"200": {"description": "the key", "content": PEM}, "404": ERROR},
        }
    },
}


def add_plain_views(result, generator, request, public):
    """drf-spectacular postprocessing hook: the plain views' operations, added to the schema."""
    result.setdefault("paths", {}).update(PATHS)
    return result
