"""Mail leaves through a Celery worker to a real SMTP server (aiosmtpd): a bulk decision of 50 requests
sends 50 messages, and with the SMTP server down every decision is still saved and the messages go out
once it is back."""

import email
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller

from access.models import AccessRequest, GatingPolicy, Grant
from distribution.models import Repo
from tests.support import servers
from tests.support.personas import person, sign_in

pytestmark = [pytest.mark.services, pytest.mark.real_mail, pytest.mark.django_db(transaction=True)]

APPLICANTS = 50


class Inbox:
    """What the SMTP server received: each message parsed, with the recipients of its envelope."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        self.messages.append((envelope.rcpt_tos, message))
        return "250 OK"


def smtp_server(port: int) -> tuple[Controller, Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


@pytest.fixture
def smtp_port(settings):
    """A port for the SMTP server, which the web side here would use too if it sent mail itself."""
    port = servers.free_port()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False
    return port


@pytest.fixture
def mail_worker(worker_env, smtp_port, tmp_path):
    """A worker on the `mail` queue whose SMTP server is 127.0.0.1:smtp_port, retrying every second or two."""
    env = {
        **worker_env,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "EMAIL_USE_TLS": "0",
        "MAIL_RETRY_SECONDS": "1",
        "MAIL_RETRY_MAX_SECONDS": "2",
    }
    process = servers.start_worker(env, tmp_path / "mail-worker.log", queues="mail", name="mail")
    yield process
    servers.stop_process(process)


@pytest.fixture
def pending(db):
    repo = Repo.objects.create(org="acme", name="tiny")
    GatingPolicy.objects.create(repo=repo)
    for number in range(APPLICANTS):
        AccessRequest.objects.create(user=person(f"applicant{number}"), repo=repo, license_version="1")
    return repo


def accept_all(client, repo):
    sign_in(client, person("bob", reviews=[repo]))
    chosen = list(AccessRequest.objects.values_list("pk", flat=True))
    return client.post("/review/", {"decision": "accepted", "request": chosen})


def acceptances(inbox: Inbox) -> dict[str, object]:
    return {recipients[0]: message for recipients, message in inbox.messages if "accepted" in message["Subject"]}


def test_fifty_accepted_in_one_bulk_action_send_fifty_messages(client, pending, mail_worker, smtp_port):
    controller, inbox = smtp_server(smtp_port)
    try:
        assert accept_all(client, pending).status_code == 302
        servers.wait_until(lambda: len(acceptances(inbox)) == APPLICANTS, timeout=120, what="50 messages")
    finally:
        controller.stop()
    received = acceptances(inbox)
    assert sorted(received) == sorted(f"applicant{number}@example.org" for number in range(APPLICANTS))
    message = received["applicant7@example.org"]
    assert message["Subject"] == "[Weightgate] Your request for acme/tiny was accepted"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert 'snapshot_download("acme/tiny"' in text and "<pre" in html and "acme/tiny" in html


def test_with_smtp_down_every_decision_is_saved_and_the_mail_follows(client, pending, mail_worker, smtp_port):
    response = accept_all(client, pending)  # nothing listens on smtp_port yet
    assert response.status_code == 302
    assert AccessRequest.objects.filter(state=AccessRequest.State.ACCEPTED).count() == APPLICANTS
    assert Grant.objects.filter(revoked_at__isnull=True).count() == APPLICANTS
    controller, inbox = smtp_server(smtp_port)
    try:
        servers.wait_until(lambda: len(acceptances(inbox)) == APPLICANTS, timeout=120, what="the delayed messages")
    finally:
        controller.stop()
    # Delivery is at least once: a server that took a message and then failed the session's end gets it again.
    assert sorted(acceptances(inbox)) == sorted(f"applicant{number}@example.org" for number in range(APPLICANTS))
