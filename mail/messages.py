"""Mail the portal sends: rendered from templates (a subject, a text body and an HTML body) while the
request or job that decided it runs, and handed to a Celery task once its transaction commits, so an
SMTP server that is down delays mail and never undoes or interrupts a decision."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string

from mail.tasks import deliver


def rendered(template: str, context: dict) -> tuple[str, str, str]:
    """(subject, text, html) of `mail/<template>`: its `_subject.txt`, `.txt` and `.html` files."""
    context = {"portal_name": "Weightgate", **context}
    subject = " ".join(render_to_string(f"mail/{template}_subject.txt", context).split())
    text, html = (render_to_string(f"mail/{template}.{kind}", context) for kind in ("txt", "html"))
    return subject, text, html


def send(template: str, context: dict, to: list[str]) -> None:
    """Render `template` for `to` now, and deliver it after the current transaction commits."""
    recipients = [address for address in to if address]
    if not recipients:
        return
    subject, text, html = rendered(template, context)
    queue(subject, text, html, recipients)


# A staff alert lists this many problems; the rest are counted (the command it names lists them all).
MAILED_PROBLEMS = 50


def alert_staff(template: str, problems: list[str]) -> None:
    """Mail every active staff member the problems a periodic check found (`problems`, `shown`, `hidden`)."""
    staff = get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="")
    shown = problems[:MAILED_PROBLEMS]
    context = {"problems": problems, "shown": shown, "hidden": len(problems) - len(shown)}
    send(template, context, list(staff.values_list("email", flat=True)))


def queue(subject: str, text: str, html: str | None, to: list[str]) -> None:
    deliver.delay_on_commit(subject, text, html, to, settings.DEFAULT_FROM_EMAIL)
