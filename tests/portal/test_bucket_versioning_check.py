"""`check --deploy` asks the S3 bucket whether it keeps versions (SeaweedFS, a real endpoint): only then can a
download link name the version that was verified."""

from django.core.checks import run_checks

from tests.support.servers import versioned_bucket


def bucket_warnings() -> list:
    return [found for found in run_checks(include_deployment_checks=True) if found.id == "weightgate.W009"]


def test_a_bucket_without_versioning_is_named_with_the_command_that_turns_it_on(s3_endpoint):
    (warning,) = bucket_warnings()
    assert f"S3 bucket {s3_endpoint.bucket} does not keep versions (versioning never turned on)" in warning.msg
    assert f"put-bucket-versioning --bucket {s3_endpoint.bucket}" in warning.hint


def test_a_versioned_bucket_raises_nothing(s3_endpoint, settings):
    settings.S3_BUCKET = versioned_bucket(s3_endpoint)
    assert bucket_warnings() == []


def test_an_endpoint_that_does_not_answer_is_said_so_not_taken_for_a_bucket_without_versions(s3_endpoint, settings):
    settings.S3_ENDPOINT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there
    (warning,) = bucket_warnings()
    assert warning.msg.startswith("could not ask S3 whether the bucket keeps versions")


def test_local_storage_asks_nothing(settings):
    settings.S3_BUCKET = ""
    assert bucket_warnings() == []
