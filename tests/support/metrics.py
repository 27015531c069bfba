"""Reading /metrics as Prometheus does."""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple, float]:
    """(name, sorted labels) -> value, for every sample of the exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scraped(client) -> dict[tuple, float]:
    """The samples the portal answers the test client's GET /metrics with (it comes from the loopback)."""
    return samples(client.get("/metrics").content.decode())
