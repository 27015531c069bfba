"""`make run`'s first answer: seconds from starting `manage.py run_demo` on an empty var/ (migrations, the
demo repo published and verified, the worker and the web server started) until the portal answers its
first page, for this tree and for a baseline commit checked out beside it, in the same run.

    python -m bench.startup [--baseline COMMIT] [--rounds 2]

The case measured is a new user's: an empty var/ each time (the first start, not a restart)."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.verify import publish_results

ROOT = Path(__file__).resolve().parent.parent
# The last commit before this session's operations work: what `make run` was.
BASELINE = "1429a74"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_answer(tree: Path, var: Path) -> float:
    """Seconds until run_demo's portal answers /, on an empty `var`."""
    port = free_port()
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    env = {name: value for name, value in os.environ.items() if name in keep}
    env.update(WEIGHTGATE_VAR_DIR=str(var), PYTHONPATH=str(tree))
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_demo", "--port", str(port)],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - started < 600:
            if process.poll() is not None:
                raise RuntimeError(f"run_demo in {tree} exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"run_demo in {tree} never answered")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wg-startup-") as scratch:
        baseline = Path(scratch) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(baseline), options.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            times = {"baseline": [], "this tree": []}
            for round_ in range(options.rounds):  # interleaved, so a busy moment hits both alike
                for name, tree in (("baseline", baseline), ("this tree", ROOT)):
                    times[name].append(first_answer(tree, Path(scratch) / f"var-{name.replace(' ', '-')}-{round_}"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
    best = {name: min(values) for name, values in times.items()}
    ratio = best["baseline"] / best["this tree"]
    lines = [
        "# `make run`: seconds to the first page, on an empty var/ (a new user's first start)",
        "",
        f"Baseline: commit {options.baseline}. Best of {options.rounds}, interleaved, on this machine.",
        "",
        "| tree | seconds (each round) | best |",
        "| --- | --- | --- |",
        *(f"| {name} | {', '.join(f'{t:.1f}' for t in values)} | {best[name]:.1f} |" for name, values in times.items()),
        "",
        f"Speed against the baseline: {ratio:.2f}x (above 1: this tree answers sooner).",
    ]
    publish_results("startup.md", lines)


if __name__ == "__main__":
    main(sys.argv[1:])
