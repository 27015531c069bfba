"""Delivering mail, with retries: an SMTP server that refuses or is unreachable is tried again later."""

import logging
import smtplib

from celery import shared_task
from django.conf import settings
from django.core.mail import EmailMultiAlternatives

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def deliver(self, subject: str, text: str, html: str | None, to: list[str], from_email: str) -> None:
    message = EmailMultiAlternatives(subject, text, from_email, to)
    if html:
        message.attach_alternative(html, "text/html")
    try:
        message.send()
    except (smtplib.SMTPException, OSError) as error:
        if self.request.retries >= settings.MAIL_MAX_RETRIES:
            log.error("mail %r to %s given up after %d tries: %s", subject, to, self.request.retries + 1, error)
            raise
        # Doubling waits, capped: a short outage costs seconds, a long one one try per MAIL_RETRY_MAX_SECONDS.
        countdown = min(settings.MAIL_RETRY_MAX_SECONDS, settings.MAIL_RETRY_SECONDS * 2**self.request.retries)
        log.warning("mail %r to %s not sent (%s); trying again in %d s", subject, to, error, countdown)
        raise self.retry(exc=error, countdown=countdown) from error
