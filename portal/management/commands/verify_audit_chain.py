from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.chain import breaks
from audit.models import AuditEvent
from portal.anchors import copies_breaks, stored_documents


class Command(BaseCommand):
    help = (
        "Check the audit log: its keyed hash chain, the addresses beside it, and the signed anchors kept in "
        "storage (and in --anchors DIR, an auditor's copies); name every event edited, deleted, moved or cut."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchors",
            type=Path,
            metavar="DIR",
            help="also check against the anchors saved in DIR (the documents /api/v1/audit/anchors/ served)",
        )

    def handle(self, *args, anchors: Path | None, **options):
        if anchors is not None and not anchors.is_dir():
            raise CommandError(f"--anchors {anchors} is not a directory of saved anchors")
        found = [*breaks(), *(copies_breaks(anchors) if anchors is not None else ())]
        if found:
            for problem in found:
                self.stderr.write(f"  {problem}")
            raise CommandError(f"the audit log was tampered with: {len(found)} problem(s), the first: {found[0]}")
        events = AuditEvent.objects.count()
        unkeyed = AuditEvent.objects.filter(chain_key="").count()
        anchored = len(stored_documents())
        self.stdout.write(
            f"the audit chain is intact ({events} events)"
            + (f"; {unkeyed} of them were chained before the chain was keyed" if unkeyed else "")
            + (
                f"; it agrees with the {anchored} anchors in storage"
                if anchored
                else "; no anchor in storage yet (a worker signs one every AUDIT_ANCHOR_SECONDS)"
            )
        )
