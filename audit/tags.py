"""Every tag an audit event can carry, in one enumeration; code never spells a tag as a string.

A tag reads `subject:object:action`. The values are hashed into the audit chain, so a value never
changes once events carry it: a new meaning gets a new tag.
"""

from enum import StrEnum


class Tag(StrEnum):
    # Accounts and their tokens
    ACCOUNT_CREATED = "access:account:created"
    EMAIL_VERIFIED = "access:email:verified"
    LOGIN_FAILED = "access:login:failed"
    TOKEN_CREATED = "access:token:created"
    TOKEN_REVOKED = "access:token:revoked"
    # The second factor staff and reviewers sign in with (an authenticator app and its recovery codes)
    SECOND_FACTOR_ADDED = "access:second-factor:added"
    SECOND_FACTOR_REMOVED = "access:second-factor:removed"
    # Access requests, grants, licenses and reviewers
    REQUEST_SUBMITTED = "access:request:submitted"
    REQUEST_REAPPLIED = "access:request:reapplied"
    REQUEST_PENDING = "access:request:pending"
    REQUEST_ACCEPTED = "access:request:accepted"
    REQUEST_REJECTED = "access:request:rejected"
    GRANT_CREATED = "access:grant:created"
    GRANT_REVOKED = "access:grant:revoked"
    GRANT_EXPIRED = "access:grant:expired"
    LICENSE_ACCEPTED = "access:license:accepted"
    REVIEWER_ASSIGNED = "access:reviewer:assigned"
    PUBLISHER_ASSIGNED = "access:publisher:assigned"
    POLICY_CHANGED = "access:policy:changed"
    # What staff change in the admin, by model and action
    ADMIN_ACCESS_REQUEST_CREATED = "admin:accessrequest:created"
    ADMIN_ACCESS_REQUEST_CHANGED = "admin:accessrequest:changed"
    ADMIN_ACCESS_REQUEST_DELETED = "admin:accessrequest:deleted"
    ADMIN_GRANT_CREATED = "admin:grant:created"
    ADMIN_GRANT_CHANGED = "admin:grant:changed"
    ADMIN_GRANT_DELETED = "admin:grant:deleted"
    ADMIN_REVIEWER_CREATED = "admin:reviewer:created"
    ADMIN_REVIEWER_CHANGED = "admin:reviewer:changed"
    ADMIN_REVIEWER_DELETED = "admin:reviewer:deleted"
    ADMIN_PUBLISHER_CREATED = "admin:publisher:created"
    ADMIN_PUBLISHER_CHANGED = "admin:publisher:changed"
    ADMIN_PUBLISHER_DELETED = "admin:publisher:deleted"
    ADMIN_TOKEN_CREATED = "admin:apitoken:created"
    ADMIN_TOKEN_CHANGED = "admin:apitoken:changed"
    ADMIN_TOKEN_DELETED = "admin:apitoken:deleted"
    ADMIN_USER_CREATED = "admin:user:created"
    ADMIN_USER_CHANGED = "admin:user:changed"
    ADMIN_USER_DELETED = "admin:user:deleted"
    ADMIN_REPO_CREATED = "admin:repo:created"
    ADMIN_REPO_CHANGED = "admin:repo:changed"
    ADMIN_REPO_DELETED = "admin:repo:deleted"
    ADMIN_REVISION_CHANGED = "admin:revision:changed"
    ADMIN_REVISION_DELETED = "admin:revision:deleted"
    # A repo created by a publisher's Hub client (staff create theirs in the admin)
    REPO_CREATED = "distribution:repo:created"
    # Revisions, from publishing to release; a draft is a publish whose files are not all stored yet
    DRAFT_STARTED = "distribution:draft:started"
    DRAFT_RESUMED = "distribution:draft:resumed"
    DRAFT_DISCARDED = "distribution:draft:discarded"
    REVISION_PUBLISHED = "distribution:revision:published"
    REVISION_VERIFIED = "verification:revision:verified"
    REVISION_FAILED = "verification:revision:failed"
    REVISION_RELEASED = "distribution:revision:released"
    REVISION_TAGGED = "distribution:revision:tagged"
    REVISION_WITHDRAWN = "distribution:revision:withdrawn"
    # A traceable revision's served layout written after its verification (manage.py prepare_traceable)
    SERVED_LAYOUT_PREPARED = "verification:served-layout:prepared"
    # Downloads and the links that lead to them
    DOWNLOAD_SERVED = "distribution:download:served"
    DOWNLOAD_TICKET_ISSUED = "distribution:ticket:issued"
    DOWNLOAD_TICKET_RENEWED = "distribution:ticket:renewed"
    REDIRECT_TICKET_ISSUED = "distribution:redirect-ticket:issued"
    # Traceable copies: one issued per grant and revision; a leak traced, by command or staff page
    COPY_ISSUED = "distribution:copy:issued"
    LEAK_TRACED = "distribution:leak:traced"


# Tags that change nobody's access (bytes and links handed out), so caches of who may do what keep them.
ACCESS_NEUTRAL = frozenset(
    {
        Tag.DOWNLOAD_SERVED,
        Tag.DOWNLOAD_TICKET_ISSUED,
        Tag.DOWNLOAD_TICKET_RENEWED,
        Tag.REDIRECT_TICKET_ISSUED,
        # a second factor guards browser sessions on staff pages, never a token's downloads
        Tag.SECOND_FACTOR_ADDED,
        Tag.SECOND_FACTOR_REMOVED,
        Tag.COPY_ISSUED,
        Tag.LEAK_TRACED,
    }
)
