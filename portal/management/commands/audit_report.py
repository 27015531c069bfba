import csv
import json

from django.core.management.base import BaseCommand

from portal.reports import as_rows, who_obtained


class Command(BaseCommand):
    help = "Who obtained which model: per person and revision, first and last download, bytes, completeness."

    def add_arguments(self, parser):
        parser.add_argument("--repo", help="ORG/NAME (default: every repo)")
        parser.add_argument("--user", help="one person's history")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")

    def handle(self, *args, repo, user, format, **options):
        rows = as_rows(who_obtained(repo, user))
        if format == "json":
            self.stdout.write(json.dumps(rows, indent=2))
            return
        fields = [
            "username",
            "repo",
            "revision",
            "first_download",
            "last_download",
            "files_served",
            "files_in_revision",
            "bytes_served",
            "complete",
        ]
        writer = csv.DictWriter(self.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
