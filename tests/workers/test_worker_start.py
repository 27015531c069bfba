"""A worker that judges checkpoints or runs smoke passes loads the model code as it starts, so the first
revision it verifies does not wait for torch and transformers; a worker of other queues does not."""

import pytest

from tests.support import servers


@pytest.mark.services
@pytest.mark.parametrize(("queues", "loads"), [("gpu", True), ("mail", False)])
def test_a_worker_loads_the_model_code_before_it_is_ready_only_for_queues_that_build_models(
    worker_env, tmp_path, queues, loads
):
    log = tmp_path / "worker.log"
    process = servers.start_worker(worker_env, log, queues=queues, name=f"start-{queues}")
    try:
        lines = log.read_text().splitlines()
    finally:
        servers.stop_process(process)
    ready = next(number for number, line in enumerate(lines) if " ready." in line)
    loaded = [number for number, line in enumerate(lines) if "model code loaded in" in line]
    assert (loaded != [] and loaded[0] < ready) if loads else loaded == []
