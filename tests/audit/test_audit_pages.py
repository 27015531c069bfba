"""Who obtained which model: the report's numbers on crafted events, and its page, API and exports
for staff, reviewers and each person's own history."""

import csv
import io
import json
import random
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from access.services import grant_access
from distribution.models import DownloadEvent, Repo, Revision, RevisionFile
from portal import reports
from portal.reports import FIELDS, SERVED, DownloadQuery, as_csv, covered, served_window, who_obtained
from tests.support.personas import person, sign_in, token_for

pytestmark = pytest.mark.django_db
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TINY, OTHER = "a" * 40, "b" * 40


def revision_with(repo_id: str, commit: str, sizes: dict[str, int]) -> Revision:
    org, name = repo_id.split("/")
    repo, _ = Repo.objects.get_or_create(org=org, name=name)
    revision = Revision.objects.create(
        repo=repo, commit=commit, state=Revision.State.RELEASED, storage_backend="local", released_at=timezone.now()
    )
    for path, size in sizes.items():
        RevisionFile.objects.create(revision=revision, path=path, size=size, sha256="0" * 64)
    return revision


def event(
    user, revision: Revision, path: str, hour: float, *, asked="", status=200, expected=None, served=None, s3=False
):
    """One recorded request, `hour` hours after START; `user` None is someone who did not sign in."""
    stored = revision.files.get(path=path)
    return DownloadEvent.objects.create(
        user=user,
        username=user.username if user else "",
        repo_id=revision.repo.repo_id,
        revision=revision,
        commit=revision.commit,
        file=stored,
        path=path,
        channel=DownloadEvent.Channel.S3_REDIRECT if s3 else DownloadEvent.Channel.LOCAL,
        range_requested=asked,
        status=status,
        bytes_expected=expected,
        bytes_served=served,
        created_at=START + timedelta(hours=hour),
    )


def by_person(report) -> dict:
    return {row.username: row for row in report}


def test_the_report_follows_the_documented_semantics_on_crafted_events():
    revision = revision_with("acme/tiny", TINY, {"a.bin": 1000, "b.bin": 500})
    alice, bob, carol, dave, erin = (person(name) for name in ("alice", "bob", "carol", "dave", "erin"))
    # whole downloads
    event(alice, revision, "a.bin", 0, expected=1000, served=1000)
    event(alice, revision, "b.bin", 1, expected=500, served=500)
    # cut at 400, resumed from there; b.bin sent by sendfile, so only what was authorized is known
    event(bob, revision, "a.bin", 0, expected=1000, served=400)
    event(bob, revision, "a.bin", 2, asked="bytes=400-", status=206, expected=600, served=600)
    event(bob, revision, "b.bin", 3, expected=500)
    # two ranges that leave bytes 300-499 of a.bin unsent
    event(carol, revision, "a.bin", 0, asked="bytes=0-299", status=206, expected=300, served=300)
    event(carol, revision, "a.bin", 1, asked="bytes=500-", status=206, expected=500, served=500)
    event(carol, revision, "b.bin", 2, expected=500, served=500)
    # S3 redirects: the bytes never pass through the portal, they count as authorized
    event(dave, revision, "a.bin", 0, status=302, expected=1000, s3=True)
    event(dave, revision, "b.bin", 0.5, status=302, expected=500, s3=True)
    # the last 200 bytes and the first 300 make b.bin whole; a refused request serves nothing
    event(erin, revision, "b.bin", 0, asked="bytes=-200", status=206, expected=200, served=200)
    event(erin, revision, "b.bin", 4, asked="bytes=0-299", status=206, expected=300, served=300)
    event(erin, revision, "a.bin", 5, status=429)
    event(None, revision, "b.bin", 6, expected=500, served=500)
    # no count at all stands for the whole file, here beside a range of it
    frank = person("frank")
    event(frank, revision, "a.bin", 0, status=302, s3=True)
    event(frank, revision, "a.bin", 1, asked="bytes=100-", status=302, expected=1000, s3=True)
    event(frank, revision, "b.bin", 2, status=302, s3=True)

    rows = by_person(who_obtained(DownloadQuery()))

    assert set(rows) == {"alice", "bob", "carol", "dave", "erin", "(anonymous)", "frank"}
    summary = {
        name: (row.files_served, row.files_in_revision, row.bytes_served, row.complete) for name, row in rows.items()
    }
    assert summary == {
        "alice": (2, 2, 1500, True),
        "bob": (2, 2, 1500, True),
        "carol": (2, 2, 1300, False),
        "dave": (2, 2, 1500, True),
        "erin": (1, 2, 500, False),
        "(anonymous)": (1, 2, 500, False),
        "frank": (2, 2, 1000 + 900 + 500, True),
    }
    assert rows["alice"].revision == TINY and rows["alice"].repo == "acme/tiny"
    assert rows["alice"].first_download == START.isoformat()
    assert rows["alice"].last_download == (START + timedelta(hours=1)).isoformat()
    assert rows["erin"].last_download == (START + timedelta(hours=4)).isoformat()  # the refused request is not one


def reference(events) -> dict:
    """The report computed event by event from served_window and covered, as documented."""
    groups = {}
    for served in events:
        key = (served.username or "(anonymous)", served.repo_id, served.commit)
        group = groups.setdefault(key, {"times": [], "files": defaultdict(list), "bytes": 0, "revision": served})
        group["times"].append(served.created_at)
        size = served.file.size
        window = served_window(served.range_requested, served.bytes_served, served.bytes_expected, size)
        if window:
            group["files"][served.file_id, size].append(window)
            group["bytes"] += window[1] - window[0]
    report = {}
    for key, group in groups.items():
        count = RevisionFile.objects.filter(revision_id=group["revision"].revision_id).count()
        whole = sum(covered(windows, size) for (_, size), windows in group["files"].items())
        report[key] = (
            min(group["times"]).isoformat(),
            max(group["times"]).isoformat(),
            len(group["files"]),
            count,
            group["bytes"],
            whole == count,
        )
    return report


def range_headers(cut: int) -> list[str]:
    """Whole-file requests most often, the ranges clients send, and headers no client should send."""
    whole, sent = ["", "", "", "", "", ""], [f"bytes={cut}-", f"bytes={cut}-{cut + 99}", f"bytes=-{cut}"]
    odd = [f" bytes={cut}-", "bytes=abc", "BYTES=1-", "bytes=10", "items=0-5", "bytes=0-9,20-30", f"bytes=-{cut}x"]
    return [*whole, *sent, *odd]


@pytest.mark.parametrize("seed", range(12))
def test_the_report_equals_the_event_by_event_definition_on_random_events(seed):
    rng = random.Random(seed)
    revisions = [
        revision_with("acme/tiny", TINY, {"a.bin": 1000, "b.bin": 4096, "empty.txt": 0}),
        revision_with("acme/other", OTHER, {"m.bin": 777}),
    ]
    people = [person("alice"), person("bob"), person("carol"), person("dave"), None]
    files = [stored for revision in revisions for stored in revision.files.all()]
    hour = 0
    for someone in people:
        # Some people fetch a file once, others many times: files SQL settles alone and files it leaves to Python.
        for stored in rng.sample(files, 3):
            for _ in range(rng.choice([1, 1, 2, 5])):
                hour += 1
                size, cut = stored.size, rng.randrange(0, stored.size + 20)
                amounts = [size, size, cut, 0, None, size + 7, size - cut]
                event(
                    someone,
                    stored.revision,
                    stored.path,
                    hour,
                    asked=rng.choice(range_headers(cut)),
                    status=rng.choice([200, 206, 302, 302, 416, 429]),
                    expected=rng.choice(amounts),
                    served=rng.choice(amounts),
                )
    served = DownloadEvent.objects.filter(status__in=SERVED).select_related("file")

    report = who_obtained(DownloadQuery())

    got = {
        (row.username, row.repo, row.revision): (
            row.first_download,
            row.last_download,
            row.files_served,
            row.files_in_revision,
            row.bytes_served,
            row.complete,
        )
        for row in report
    }
    assert len(got) == len(report) >= 3
    assert got == reference(served)


def test_a_request_written_between_the_two_queries_waits_for_the_next_report(monkeypatch):
    revision = revision_with("acme/tiny", TINY, {"a.bin": 1000})
    alice = person("alice")
    event(alice, revision, "a.bin", 0, expected=1000, served=1000)
    grouped = reports.grouped

    def grouped_then_a_download(query):
        found = grouped(query)
        event(alice, revision, "a.bin", 1, asked="bytes=0-99", status=206, expected=100, served=100)
        return found

    monkeypatch.setattr(reports, "grouped", grouped_then_a_download)
    (row,) = who_obtained(DownloadQuery())
    assert (row.bytes_served, row.complete, row.last_download) == (1000, True, START.isoformat())
    monkeypatch.undo()
    (row,) = who_obtained(DownloadQuery())
    assert row.bytes_served == 1100


def test_the_filters_narrow_the_rows():
    tiny = revision_with("acme/tiny", TINY, {"a.bin": 10})
    other = revision_with("acme/other", OTHER, {"m.bin": 10})
    alice, bob = person("alice"), person("bob")
    event(alice, tiny, "a.bin", 0, expected=10, served=10)
    event(alice, other, "m.bin", 48, expected=10, served=10)
    event(bob, tiny, "a.bin", 24, expected=10, served=10)

    def rows(**query):
        return sorted((row.username, row.repo) for row in who_obtained(DownloadQuery(**query)))

    assert rows() == [("alice", "acme/other"), ("alice", "acme/tiny"), ("bob", "acme/tiny")]
    assert rows(repos=("acme/tiny",)) == [("alice", "acme/tiny"), ("bob", "acme/tiny")]
    assert rows(revision=OTHER[:7]) == [("alice", "acme/other")]
    assert rows(revision=TINY) == [("alice", "acme/tiny"), ("bob", "acme/tiny")]
    assert rows(username="bob") == [("bob", "acme/tiny")]
    assert rows(user_id=alice.pk) == [("alice", "acme/other"), ("alice", "acme/tiny")]
    assert rows(since=START + timedelta(hours=1)) == [("alice", "acme/other"), ("bob", "acme/tiny")]
    assert rows(until=START + timedelta(hours=24)) == [("alice", "acme/tiny")]


def test_the_command_takes_the_same_filters(capsys):
    tiny = revision_with("acme/tiny", TINY, {"a.bin": 10})
    event(person("alice"), tiny, "a.bin", 0, expected=10, served=10)
    event(person("bob"), tiny, "a.bin", 30, expected=10, served=10)
    out = io.StringIO()
    call_command("audit_report", "--until", "2025-03-01", "--format", "json", stdout=out)
    assert [row["username"] for row in json.loads(out.getvalue())] == ["alice"]  # a bare day includes that day
    out = io.StringIO()
    call_command("audit_report", "--since", "2025-03-02", "--revision", TINY[:8], stdout=out)
    assert [line["username"] for line in csv.DictReader(io.StringIO(out.getvalue()))] == ["bob"]
    with pytest.raises(CommandError, match="--since"):
        call_command("audit_report", "--since", "yesterday", stdout=io.StringIO())


@pytest.fixture
def portal():
    """Downloads of two repos, and the people who may or may not see them."""
    tiny = revision_with("acme/tiny", TINY, {"a.bin": 10, "b.bin": 20})
    other = revision_with("acme/other", OTHER, {"m.bin": 5})
    alice, gina = person("alice"), person("gina")
    grant_access(gina, tiny.repo, granted_by=None)
    event(alice, tiny, "a.bin", 0, expected=10, served=10)
    event(alice, tiny, "b.bin", 1, expected=20, served=20)
    event(gina, tiny, "a.bin", 30, asked="bytes=0-4", status=206, expected=5, served=5)
    event(alice, other, "m.bin", 50, expected=5, served=5)
    return {
        "alice": alice,
        "gina": gina,
        "staff": person("carol", staff=True),
        "reviewer": person("bob", reviews=[tiny.repo]),
        "other_reviewer": person("olga", reviews=[other.repo]),
    }


def seen(response) -> list[tuple[str, str]]:
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body  # the API pages its rows; the exports do not
    return sorted((row["username"], row["repo"]) for row in rows)


ALL_ROWS = [("alice", "acme/other"), ("alice", "acme/tiny"), ("gina", "acme/tiny")]


def test_the_page_shows_staff_every_repo_and_a_reviewer_only_theirs(client, portal):
    sign_in(client, portal["staff"])
    page = client.get("/audit/downloads/")
    assert page.status_code == 200
    assert b"acme/other" in page.content and b"gina" in page.content
    assert b'href="/audit/downloads.csv?"' in page.content

    sign_in(client, portal["reviewer"])
    page = client.get("/audit/downloads/", {"user": "gina"})
    assert page.status_code == 200
    assert b"gina" in page.content and b"acme/other" not in page.content
    assert b'href="/audit/downloads.json?user=gina"' in page.content
    assert seen(client.get("/audit/downloads.json")) == [("alice", "acme/tiny"), ("gina", "acme/tiny")]

    sign_in(client, portal["other_reviewer"])
    assert seen(client.get("/audit/downloads.json")) == [("alice", "acme/other")]
    assert client.get("/audit/downloads/", {"repo": "acme/tiny"}).status_code == 404
    assert client.get("/audit/downloads/", {"repo": "acme/nothing"}).status_code == 404


def test_the_page_refuses_grantees_and_sends_the_anonymous_to_sign_in(client, portal):
    for path in ("/audit/downloads/", "/audit/downloads.csv", "/account/downloads.json"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    sign_in(client, portal["gina"])
    assert client.get("/audit/downloads/").status_code == 403
    assert client.get("/audit/downloads.csv").status_code == 403


def test_the_page_filters_and_its_exports_agree(client, portal):
    sign_in(client, portal["staff"])
    everything = client.get("/audit/downloads.json").json()
    assert sorted((row["username"], row["repo"]) for row in everything) == ALL_ROWS
    for query, expected in (
        ({"repo": "acme/tiny"}, [("alice", "acme/tiny"), ("gina", "acme/tiny")]),
        ({"revision": OTHER[:10]}, [("alice", "acme/other")]),
        ({"user": "gina"}, [("gina", "acme/tiny")]),
        ({"since": "2025-03-02"}, [("alice", "acme/other"), ("gina", "acme/tiny")]),
        ({"until": "2025-03-02"}, [("alice", "acme/tiny"), ("gina", "acme/tiny")]),
    ):
        as_json = client.get("/audit/downloads.json", query)
        as_csv = client.get("/audit/downloads.csv", query)
        assert as_csv["Content-Type"].startswith("text/csv")
        assert 'filename="downloads.csv"' in as_csv["Content-Disposition"]
        assert seen(as_json) == expected, query
        lines = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
        assert lines == [{key: str(value) for key, value in row.items()} for row in as_json.json()]
    gina = client.get("/audit/downloads.json", {"user": "gina"}).json()[0]
    assert (gina["files_served"], gina["files_in_revision"], gina["bytes_served"], gina["complete"]) == (1, 2, 5, False)
    bad = client.get("/audit/downloads.csv", {"since": "soon"})
    assert bad.status_code == 400
    assert client.get("/audit/downloads/", {"since": "soon"}).status_code == 200  # the form shows the error


def api(client, caller, path, **params):
    return client.get(path, params, HTTP_AUTHORIZATION=f"Bearer {token_for(caller)}")


def test_the_api_answers_staff_and_reviewers_within_their_repos(client, portal):
    path = "/api/v1/audit/downloads/"
    assert seen(api(client, portal["staff"], path)) == ALL_ROWS
    assert seen(api(client, portal["reviewer"], path)) == [("alice", "acme/tiny"), ("gina", "acme/tiny")]
    assert seen(api(client, portal["reviewer"], path, repo="acme/tiny", user="alice")) == [("alice", "acme/tiny")]
    assert seen(api(client, portal["other_reviewer"], path)) == [("alice", "acme/other")]
    hidden = api(client, portal["other_reviewer"], path, repo="acme/tiny")
    missing = api(client, portal["other_reviewer"], path, repo="acme/nothing")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace("tiny", "X") == missing.json()["detail"].replace("nothing", "X")
    assert api(client, portal["gina"], path).status_code == 403
    assert client.get(path).status_code == 401
    assert api(client, portal["staff"], path, until="never").status_code == 400


def test_the_api_speaks_csv_and_json_alike(client, portal):
    path = "/api/v1/audit/downloads/"
    as_json = api(client, portal["staff"], path, repo="acme/tiny", format="json")
    as_csv = api(client, portal["staff"], path, repo="acme/tiny", format="csv")
    assert as_csv.status_code == 200 and as_csv["Content-Type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    assert len(lines) == 2
    assert lines == [{key: str(value) for key, value in row.items()} for row in as_json.json()["results"]]
    refused = api(client, portal["gina"], path, format="csv")
    assert refused.status_code == 403 and "review" in refused.json()["detail"]


@pytest.mark.parametrize("path", ["/api/v1/audit/downloads/?format=csv", "/api/v1/me/downloads/"])
def test_options_describes_a_report_endpoint_in_json_whatever_format_is_asked(client, portal, path):
    sign_in(client, portal["staff"])
    described = client.options(path, HTTP_ACCEPT="text/csv")
    assert described.status_code == 200 and described["Content-Type"] == "application/json"
    assert described.json()["renders"] == ["application/json", "text/csv"]


def test_a_person_exports_their_own_downloads_only(client, portal):
    sign_in(client, portal["gina"])
    account = client.get("/account/")
    assert b'href="/account/downloads.csv"' in account.content and b'href="/account/downloads.json"' in account.content
    assert seen(client.get("/account/downloads.json")) == [("gina", "acme/tiny")]
    lines = list(csv.DictReader(io.StringIO(client.get("/account/downloads.csv").content.decode())))
    assert [(line["username"], line["bytes_served"]) for line in lines] == [("gina", "5")]
    assert seen(api(client, portal["alice"], "/api/v1/me/downloads/")) == [
        ("alice", "acme/other"),
        ("alice", "acme/tiny"),
    ]
    assert seen(api(client, portal["staff"], "/api/v1/me/downloads/")) == []
    assert client.get("/api/v1/me/downloads/", HTTP_AUTHORIZATION="Bearer wg_nonsense").status_code == 401


def test_the_api_pages_its_rows_and_its_csv_carries_them_all(client, portal):
    path = "/api/v1/audit/downloads/"
    first = api(client, portal["staff"], path, page_size=2).json()
    assert first["count"] == len(ALL_ROWS) and len(first["results"]) == 2 and first["previous"] is None
    second = client.get(first["next"], HTTP_AUTHORIZATION=f"Bearer {token_for(portal['staff'])}").json()
    assert len(second["results"]) == 1 and second["next"] is None
    every = {(row["username"], row["repo"]) for row in first["results"] + second["results"]}
    assert sorted(every) == ALL_ROWS
    as_csv = api(client, portal["staff"], path, page_size=2, format="csv").content.decode()
    assert len(list(csv.DictReader(io.StringIO(as_csv)))) == len(ALL_ROWS)


def test_the_openapi_schema_documents_the_audit_api(client):
    schema = json.loads(client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").content)
    audit = schema["paths"]["/api/v1/audit/downloads/"]["get"]
    assert {"repo", "revision", "user", "since", "until", "format"} <= {p["name"] for p in audit["parameters"]}
    assert {"application/json", "text/csv"} <= set(audit["responses"]["200"]["content"])
    assert "/api/v1/me/downloads/" in schema["paths"]
    row = schema["components"]["schemas"]["Obtained"]["properties"]
    assert {"first_download", "last_download", "files_served", "bytes_served", "complete"} <= set(row)


def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_quoted():
    rows = [{name: "" for name in FIELDS} | {"username": '=HYPERLINK("http://x")', "repo": "acme/tiny"}]
    parsed = list(csv.DictReader(io.StringIO(as_csv(rows))))
    assert parsed[0]["username"] == '\'=HYPERLINK("http://x")'
    assert parsed[0]["repo"] == "acme/tiny"  # ordinary values are untouched


def test_the_audit_and_review_pages_chart_each_days_downloads_and_requests(client, portal):
    from access.models import AccessRequest

    tiny = Repo.objects.get(org="acme", name="tiny")
    for name in ("hal", "ida", "jon"):
        AccessRequest.objects.create(user=person(name), repo=tiny, license_version="1")
    sign_in(client, portal["staff"])
    chart = client.get("/audit/downloads/").content.decode()
    drawn = chart[chart.index('id="activity"') :]
    assert "<svg" in drawn and "<script" not in drawn
    # Every download and request of the fixture is in the last 30 days' bars, one title per bar.
    downloads = sum(int(n) for n in re.findall(r": (\d+) downloads</title>", drawn))
    requests = sum(int(n) for n in re.findall(r": (\d+) requests</title>", drawn))
    recent = timezone.now() - timedelta(days=29)
    assert downloads == DownloadEvent.objects.filter(created_at__gte=recent.replace(hour=0, minute=0)).count()
    assert requests == AccessRequest.objects.filter(created_at__gte=recent.replace(hour=0, minute=0)).count() >= 3
    sign_in(client, portal["reviewer"])
    queue = client.get("/review/").content.decode()
    assert 'id="activity"' in queue and "in the repos you review" in queue
