"""The audit chain's anchors, for auditors to keep copies of: public, like the signing keys that check
them, since an anchor tells only how many events the log held at a time, not what they were."""

from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from audit.anchors import BadAnchor, parsed, sequence_named
from hub.errors import hf_error
from portal.anchors import stored_documents

PAGE_ANCHORS = 500


@require_GET
def anchors(request):
    """The anchors after `?after=SEQUENCE`, oldest first, each with its signed document as stored."""
    after = request.GET.get("after", "0")
    if not after.isdigit() or len(after) > 15:
        return hf_error(400, f"after={after!r} is not an event sequence number: use a whole number, e.g. after=0")
    documents = stored_documents(int(after))
    page = list(documents.items())[:PAGE_ANCHORS]
    listed = []
    for name, document in page:
        try:
            anchor = parsed(name, document)
        except BadAnchor:
            continue  # verify_audit_chain names it; an auditor's copy holds only what was signed
        listed.append({**anchor.as_dict(), "document": document.decode()})
    cursor = sequence_named(page[-1][0]) if len(documents) > len(page) else None
    next_url = f"{reverse('audit-anchors')}?after={cursor}" if cursor is not None else None
    return JsonResponse({"anchors": listed, "next": request.build_absolute_uri(next_url) if next_url else None})
