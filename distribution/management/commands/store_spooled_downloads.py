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
        stored = ship_orphans(Path(settings.DOWNLOAD_SPOOL_DIR))
        self.stdout.write(f"{stored} spooled download event(s) stored")
