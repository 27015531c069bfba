"""python -m verification DIR [--json] [--no-smoke] [--allow-code]

Exit status: 0 every check passed, 1 a check failed, 2 bad usage or unreadable input.
On a terminal, stderr shows each file's progress (bytes done, rate); stdout holds only the report.
"""

import argparse
import sys

from verification.core.checks import UnreadableCheckpoint, check_directory
from verification.core.progress import TerminalProgress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verification", description="Check a checkpoint directory.")
    parser.add_argument("directory", help="the checkpoint directory (safetensors shards, index, config)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke inference")
    parser.add_argument(
        "--allow-code", action="store_true", help="accept Python files and a config's auto_map (model code to run)"
    )
    args = parser.parse_args(argv)
    progress = TerminalProgress(sys.stderr) if sys.stderr.isatty() else None
    try:
        report = check_directory(args.directory, smoke=not args.no_smoke, progress=progress, allow_code=args.allow_code)
    except UnreadableCheckpoint as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        print(report.to_json())
    else:
        for check in report.checks:
            where = f" {check.file}" if check.file else ""
            print(f"{check.status.upper():4} {check.name}/{check.code}{where}: {check.message}")
        print("OK: every check passed" if report.ok else f"FAILED: {len(report.failures)} check(s) failed")
    return 0 if report.ok else 1
