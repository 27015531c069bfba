"""allauth's mail (address confirmation, password reset, sign-in codes) sent like the portal's own:
rendered in the request, delivered by the mail task with retries."""

from allauth.account.adapter import DefaultAccountAdapter

from mail.messages import queue


class QueuedMailAdapter(DefaultAccountAdapter):
    def send_mail(self, template_prefix, email, context):
        message = self.render_mail(template_prefix, email, context)
        alternatives = getattr(message, "alternatives", [])
        html = next((content for content, mimetype in alternatives if mimetype == "text/html"), None)
        queue(message.subject, message.body, html, list(message.to))
