"""Reading the audit chain in tests: the events recorded under a tag, and the user agent tests send."""

from audit.models import AuditEvent

AGENT = "audit-test/1.0"


def events(tag: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tag=tag).order_by("sequence"))


def only_event(tag: str) -> AuditEvent:
    found = events(tag)
    assert len(found) == 1, f"{len(found)} events tagged {tag}"
    return found[0]
