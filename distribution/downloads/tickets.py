"""Download tickets: signed, expiring, bound to one person, grant and file.

The signature is Django's HMAC signing with SECRET_KEY; keys listed in SECRET_KEY_FALLBACKS still
verify after a rotation, and only the current key signs.
"""

from dataclasses import dataclass

from django.core import signing

from hub.errors import Refusal

SALT = "weightgate.download-ticket"


class LinkRefused(Refusal):
    """A download link (a Hub redirect ticket or a DownloadTicket) that must not serve; says why."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message, status)


@dataclass(frozen=True)
class Ticket:
    file_id: int
    user_id: int | None
    grant_id: int | None
    token_id: int | None


def issue_ticket(*, file_id: int, user_id: int | None, grant_id: int | None, token_id: int | None) -> str:
    return signing.dumps({"f": file_id, "u": user_id, "g": grant_id, "t": token_id}, salt=SALT)


def read_ticket(value: str, *, max_age: int) -> Ticket:
    try:
        payload = signing.loads(value, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as error:
        raise LinkRefused(f"this download link has expired ({error}); ask for the file again for a new link") from None
    except signing.BadSignature:
        raise LinkRefused("this download link is not valid: it was altered or cut; ask for the file again") from None
    return Ticket(file_id=payload["f"], user_id=payload["u"], grant_id=payload["g"], token_id=payload["t"])
