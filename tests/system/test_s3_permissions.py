"""The README's S3 policy for the portal's key names every action the code's S3 calls need, and no other:
each call `distribution/storage.py` makes (methods of the client, its paginators, the operations it
presigns) is looked up in what AWS's S3 asks for it. SeaweedFS, which the suite runs, has no IAM policies,
so this is the check that keeps a least-privilege key working as the code changes."""

import json
import re

from tests.support.servers import REPO_ROOT

# What each S3 operation asks of the key that makes or signs it (AWS's "Actions defined by Amazon S3").
# Reads and links may name a VersionId, which needs s3:GetObjectVersion beside s3:GetObject.
ACTIONS = {
    "head_bucket": {"s3:ListBucket"},
    "get_bucket_versioning": {"s3:GetBucketVersioning"},
    "list_objects_v2": {"s3:ListBucket"},
    "list_object_versions": {"s3:ListBucketVersions"},
    "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
    "list_parts": {"s3:ListMultipartUploadParts"},
    "get_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "head_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "put_object": {"s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "delete_object": {"s3:DeleteObject"},
    "delete_objects": {"s3:DeleteObject"},
}
CALLS = [
    re.compile(r"\b(?:probe_)?client\.(?!meta\b|get_paginator\b|generate_presigned_url\b)(\w+)\b"),
    re.compile(r"get_paginator\(\s*\"(\w+)\""),
    re.compile(r"generate_presigned_url\(\s*\"(\w+)\""),
]


def operations_the_code_calls() -> set[str]:
    source = (REPO_ROOT / "distribution" / "storage.py").read_text()
    return {name for pattern in CALLS for name in pattern.findall(source)}


def actions_in_the_readme() -> set[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("needs these actions on the bucket", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return {action for statement in json.loads(block)["Statement"] for action in statement["Action"]}


def test_the_readmes_policy_allows_each_s3_call_the_code_makes_and_nothing_more():
    called = operations_the_code_calls()
    assert {"get_object", "head_object", "list_object_versions", "put_object", "upload_part"} <= called
    unknown = sorted(called - ACTIONS.keys())
    assert not unknown, f"say what S3 asks of these calls in ACTIONS, and allow it in the README: {unknown}"
    needed = set().union(*(ACTIONS[name] for name in called))
    allowed = actions_in_the_readme()
    assert not needed - allowed, f"the README's policy lacks {sorted(needed - allowed)}"
    assert not allowed - needed, f"the README's policy allows what no call needs: {sorted(allowed - needed)}"
