"""bench/gpu_verify.py runs when a session is lent a GPU, for a few minutes at most: its CPU dry run here
proves that its correctness check and every arm still run before that time is spent. The script itself
only notes an arm that raises in its table (a GPU run keeps the other arms), so the test reads the table."""

import subprocess
import sys
from pathlib import Path

from bench.gpu_verify import ARMS

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "bench" / "results"


def test_the_gpu_benchmark_runs_its_checks_and_every_arm_end_to_end_on_the_cpu(tmp_path):
    written_before = {path.name: path.stat().st_mtime_ns for path in RESULTS.iterdir()}
    run = subprocess.run(
        [sys.executable, "-m", "bench.gpu_verify", "--cpu-dry-run", "--dir", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    output = run.stdout
    # Printed as they come and again in the summary: the same two lines each time.
    correctness = {line for line in output.splitlines() if line.startswith(("- float32:", "- bfloat16:"))}
    assert len(correctness) == 2, output[output.find("Correctness") :][:1500] + run.stderr[-3000:]
    for line in correctness:  # whole and streamed agree with the CPU's reference; wrong logits are refused
        assert line.count("passes") == 2 and "refused (LogitsDiffer)" in line, line
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in output.splitlines() if line.startswith("| ")}
    for arm in ARMS:
        seconds = rows[arm].split(" | ")[1]  # "-" where the arm raised (its note says why)
        assert seconds.replace(".", "").isdigit(), (rows[arm], run.stderr[-4000:])
    assert "nothing written to" in output
    assert {path.name: path.stat().st_mtime_ns for path in RESULTS.iterdir()} == written_before
