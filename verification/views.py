"""The public keys that sign releases: anyone may fetch them to check a `model.sig`.

These views only read the keys workers registered when they signed; a web host never makes or
registers a key (one made here would retire the workers' key for everyone)."""

from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from hub.errors import hf_error
from verification.models import SigningKey

PEM_TYPE = "application/x-pem-file"


def pem_response(key: SigningKey) -> HttpResponse:
    response = HttpResponse(key.public_pem, content_type=PEM_TYPE)
    response["Content-Disposition"] = 'attachment; filename="signing-key.pem"'
    response["X-Key-Fingerprint"] = key.fingerprint
    return response


@require_GET
def signing_key(request):
    """The key that signs new releases: the one registered last and not retired."""
    key = SigningKey.objects.filter(retired_at__isnull=True).first()
    if key is None:
        return hf_error(
            404,
            "no release has been signed yet: the signing key is published once a worker signs the first "
            "verified release (or an operator runs `manage.py rotate_signing_key`)",
        )
    return pem_response(key)


@require_GET
def signing_key_by_fingerprint(request, fingerprint):
    """Any key that has signed a release, by the `hint` in its model.sig, retired ones included."""
    key = SigningKey.objects.filter(fingerprint=fingerprint.lower()).first()
    if key is None:
        return hf_error(404, f"no signing key has the fingerprint {fingerprint}; see /api/v1/signing-keys/")
    return pem_response(key)


@require_GET
def signing_keys(request):
    return JsonResponse(
        [
            {
                "fingerprint": key.fingerprint,
                "first_used_at": key.first_used_at.isoformat(),
                "retired_at": key.retired_at.isoformat() if key.retired_at else None,
                "url": request.build_absolute_uri(reverse("signing-key-by-fingerprint", args=[key.fingerprint])),
            }
            for key in SigningKey.objects.all()
        ],
        safe=False,
    )
