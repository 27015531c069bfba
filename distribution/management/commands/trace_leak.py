import json

from django.core.management.base import BaseCommand, CommandError

from distribution.copies import trace_leak
from tracing.errors import TracingInputError
from tracing.tracer import DEFAULT_THRESHOLD


class Command(BaseCommand):
    help = (
        "Name the recipient of a leaked copy of a traceable repo: safetensors (any float dtype, any shards) or "
        "GGUF files, or directories of them. Exit 0 when someone is named, 1 when nobody is, 2 for unreadable input."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--repo", help="ORG/NAME the leak is of (default: try every traceable revision)")
        parser.add_argument(
            "--threshold", type=float, default=DEFAULT_THRESHOLD, help="the score that names (default %(default)s)"
        )
        parser.add_argument("--json", dest="as_json", action="store_true", help="the verdicts as JSON")

    def handle(self, *args, paths, repo, threshold, as_json, **options):
        try:
            verdicts = trace_leak(paths, repo_id=repo, threshold=threshold)
        except TracingInputError as error:
            raise CommandError(f"cannot read the leak: {error}", returncode=2) from None
        except LookupError as error:
            raise CommandError(str(error), returncode=2) from None
        named = any(verdict.named for verdict in verdicts)
        if as_json:
            self.stdout.write(json.dumps({"named": named, "verdicts": [v.to_json() for v in verdicts]}, indent=2))
        else:
            for verdict in verdicts:
                self.stdout.write(self.describe(verdict))
        if not named:
            raise CommandError(f"nobody is named (threshold {threshold})", returncode=1)

    def describe(self, verdict) -> str:
        lines = [f"{verdict.revision.repo.repo_id}@{verdict.revision.commit[:12]}:"]
        for accused in verdict.named:
            how = f"byte-exact copy ({accused.exact_file})" if accused.score is None else f"score {accused.score:.1f}"
            lines.append(
                f"  {accused.copy.username}: {how}; grant {accused.copy.grant_id}, "
                f"downloaded {accused.copy.created_at:%Y-%m-%d %H:%M} UTC"
            )
        if not verdict.named:
            lines.append("  nobody reaches the threshold")
        other = verdict.result.highest_other
        lines.append(f"  highest score of anyone else: {'none' if other is None else f'{other:.1f}'}")
        return "\n".join(lines)
