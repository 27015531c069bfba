from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from distribution.downloads.spool import ship_orphans


class Command(BaseCommand):
    help = (
        "Store the download events left in DOWNLOAD_SPOOL_DIR by web processes that have stopped "
        "(running processes store their own)."
    )

    def handle(self, *args, **options):
        directory = Path(settings.DOWNLOAD_SPOOL_DIR)
        files = len(list(directory.glob("downloads-*.jsonl")))
        self.stderr.write(f"{files} spool file(s) in {directory}")

        def progress(path: Path, stored: int) -> None:
            self.stderr.write(f"  {path.name}: {stored} event(s) stored so far")

        stored = ship_orphans(directory, progress)
        self.stdout.write(f"{stored} spooled download event(s) stored")
