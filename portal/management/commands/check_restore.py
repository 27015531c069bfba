from django.core.management.base import BaseCommand, CommandError

from portal.restore import audit_chain, keys, migrations, released_objects


class Command(BaseCommand):
    help = (
        "After restoring a backup: check that the database is migrated, every released revision's files are "
        "in storage with their verified sizes, the audit chain is intact against its anchors, and the keys load."
    )

    def handle(self, *args, **options):
        def progress(done: int, total: int) -> None:
            if total and (done == total or done % 50 == 0):
                self.stderr.write(f"  storage: {done}/{total} released revisions checked")

        problems = 0
        for check in (migrations(), released_objects(progress), audit_chain(), keys()):
            for finding in check:
                problems += not finding.ok
                self.stdout.write(("ok       " if finding.ok else "PROBLEM  ") + finding.text)
        if problems:
            raise CommandError(f"{problems} problem(s): do not serve from this restore until they are fixed")
        self.stdout.write("the restore is whole")
