"""Named people, built the same way in every test.

alice applies for access, bob reviews acme's repos, carol is staff, dave is a stranger whose email
is not verified yet, paula publishes. Staff, reviewers and publishers sign in with a second factor:
`sign_in` gives a test client the session they have after the login form and its code;
`enrol_second_factor` and `totp_code` are the authenticator app, for tests that go through the pages
themselves.
"""

import base64
import hashlib
import hmac
import struct
import time
from types import SimpleNamespace

from allauth.account.internal.flows.login import record_authentication
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

from access.gate import needs_second_factor
from access.models import ApiToken, Publisher, Reviewer, Scope, User

TOTP_STEP = 30


def person(
    username: str, *, verified: bool = True, staff: bool = False, reviews=(), publishes=(), email: str = ""
) -> User:
    user = User.objects.create_user(
        username=username,
        email=email or f"{username}@example.org",
        password=f"{username}-password",
        is_staff=staff,
        is_superuser=staff,
    )
    if verified:
        user.mark_email_verified()
    for repo in reviews:
        Reviewer.objects.create(user=user, repo=repo)
    for repo in publishes:
        Publisher.objects.create(user=user, repo=repo)
    return user


def token_for(user: User, name: str = "test", *, scopes=tuple(Scope), expires_at=None, repos=None) -> str:
    """A token of `user`; unless told otherwise it carries every scope and reaches every repo, as the
    tokens made before scopes existed do, so it can do all its owner may."""
    return ApiToken.issue(user, name, scopes=scopes, expires_at=expires_at, repos=repos)[1]


def totp_code(secret: str, *, steps: int = 0) -> str:
    """The six digits an authenticator app shows for `secret` now (`steps` periods later or earlier),
    by RFC 6238 written out here rather than borrowed from the code under test."""
    counter = int(time.time()) // TOTP_STEP + steps
    digest = hmac.new(base64.b32decode(secret, casefold=True), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**6:06d}"


def fresh_totp_code(secret: str, used: set[str]) -> str:
    """A code the portal accepts now that is none of `used` (a code is refused a second time): this
    period's, else the next one's or the last one's, which the one-step tolerance for clocks allows."""
    code = next(code for code in (totp_code(secret, steps=step) for step in (0, 1, -1)) if code not in used)
    used.add(code)
    return code


def wrong_totp_code(secret: str) -> str:
    """Six digits the portal refuses: none of the codes near now."""
    near = {totp_code(secret, steps=step) for step in range(-3, 4)}
    return next(code for code in (f"{n:06d}" for n in range(123456, 10**6)) if code not in near)


def enrol_second_factor(user: User) -> str:
    """Set up an authenticator app and recovery codes for `user`, as the setup page does; the secret."""
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    RecoveryCodes.activate(user)
    return secret


def recovery_codes(user: User) -> list[str]:
    codes = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    return RecoveryCodes(codes).get_unused_codes()


def sign_in(client, user: User, *, second_factor: bool = True):
    """Sign `user` in on a test client. Staff, reviewers and publishers are enrolled (if they were not) and the
    session records the code they gave at sign-in, unless `second_factor=False`: then the session is
    one that never passed it, as one made before they enrolled."""
    client.force_login(user)
    if second_factor and needs_second_factor(user):
        if not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
            enrol_second_factor(user)
        totp = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
        session = client.session
        record_authentication(SimpleNamespace(session=session), user, "mfa", id=totp.pk, type=totp.type)
        session.save()
    return client
