"""Two releases racing for one tag: both checked it was free, the database lets one have it, and the other
is refused with a message and left as it was (never a server error, never half released)."""

import pytest

from audit.models import AuditEvent
from audit.tags import Tag
from distribution.models import Revision
from distribution.publishing import PublishError, release_revision
from tests.support.flows import published_tiny_llama

pytestmark = pytest.mark.django_db(transaction=True)
REPO = "acme/tagged"


def test_a_tag_taken_meanwhile_refuses_the_release_or_retag_and_changes_nothing(tmp_path):
    first, _ = published_tiny_llama(tmp_path / "one", REPO, release=False, verify_here=True)
    second, _ = published_tiny_llama(tmp_path / "two", REPO, release=False, verify_here=True, seed=1)
    release_revision(first, tag="v1")
    # the racing request checked the tag before `first` took it: the database is what refuses it now
    with pytest.raises(PublishError, match="the tag 'v1' was just given to another revision of acme/tagged"):
        release_revision(second, tag="v1")
    second.refresh_from_db()
    assert (second.state, second.tag, second.released_at) == (Revision.State.VERIFIED, "", None)
    assert not AuditEvent.objects.filter(tag=Tag.REVISION_RELEASED, data__commit=second.commit).exists()

    release_revision(second, tag="v2")
    with pytest.raises(PublishError, match="'v1' was just given"):
        release_revision(second, tag="v1")  # a retag of a released revision races the same way
    second.refresh_from_db()
    assert (second.state, second.tag) == (Revision.State.RELEASED, "v2")
    assert not AuditEvent.objects.filter(tag=Tag.REVISION_TAGGED, data__commit=second.commit).exists()
