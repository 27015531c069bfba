from django.core.management.base import BaseCommand, CommandError

from audit.chain import first_break
from audit.models import AuditEvent


class Command(BaseCommand):
    help = "Check the audit log's hash chain; name the first event that was edited, deleted or moved."

    def handle(self, *args, **options):
        problem = first_break()
        if problem is not None:
            raise CommandError(f"the audit log was tampered with: {problem}")
        self.stdout.write(f"the audit chain is intact ({AuditEvent.objects.count()} events)")
