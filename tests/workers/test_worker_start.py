"""A worker that judges checkpoints or runs smoke passes loads the model code as it starts, so the first
revision it verifies does not wait for torch and transformers (a mail worker does not: see
tests/hub/test_request_ids_and_logs.py)."""

import pytest


@pytest.mark.services
def test_a_verify_and_gpu_worker_loads_the_model_code_before_it_says_it_is_ready(worker):
    lines = worker.log_path.read_text().splitlines()
    ready = next(number for number, line in enumerate(lines) if " ready." in line)
    loaded = [number for number, line in enumerate(lines) if "model code loaded in" in line]
    assert loaded and loaded[0] < ready
