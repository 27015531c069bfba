import time

from django.core.management.base import BaseCommand, CommandError

from portal.reports import DownloadFilters, as_csv, as_json, as_rows, who_obtained


class Command(BaseCommand):
    help = "Who obtained which model: per person and revision, first and last download, bytes, completeness."

    def add_arguments(self, parser):
        parser.add_argument("--repo", help="ORG/NAME (default: every repo)")
        parser.add_argument("--revision", help="a commit, or its first 7 characters at least")
        parser.add_argument("--user", help="one person's history")
        parser.add_argument("--since", help="from this day (YYYY-MM-DD) or moment (ISO 8601) on")
        parser.add_argument("--until", help="up to this day, included, or before this moment")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")

    def handle(self, *args, format, **options):
        filters = DownloadFilters({name: options[name] or "" for name in DownloadFilters.base_fields})
        if not filters.is_valid():
            raise CommandError("; ".join(f"--{name}: {' '.join(errors)}" for name, errors in filters.errors.items()))
        repo = filters.cleaned_data["repo"]
        started = time.monotonic()
        self.stderr.write("reading the download events…")
        rows = as_rows(who_obtained(filters.query(repos=(repo,) if repo else None)))
        self.stderr.write(f"{len(rows)} row(s) in {time.monotonic() - started:.1f} s; writing {format}")
        self.stdout.write(as_json(rows) if format == "json" else as_csv(rows), ending="\n" if format == "json" else "")
