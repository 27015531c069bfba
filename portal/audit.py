"""Writing the audit trail: one call per change, from the service that makes it."""

from portal.models import AuditEvent


def record(tag: str, *, actor=None, subject=None, repo=None, request=None, **data) -> AuditEvent:
    actor = actor if actor is not None and actor.is_authenticated else None
    return AuditEvent.objects.create(
        tag=tag,
        actor=actor,
        actor_username=actor.get_username() if actor else "",
        subject_username=subject.get_username() if subject is not None else "",
        repo_id=repo.repo_id if repo is not None else "",
        data=data,
        **AuditEvent.origin(request),
    )
