"""A benchmark writing its result keeps the notes and earlier runs people wrote into the file: the GPU
results, a few minutes of a lent machine each, are the ones a careless rewrite would lose."""

from bench import verify
from bench.verify import KEPT_BELOW, publish_results


def test_a_new_result_keeps_the_notes_below_the_marker_and_replaces_the_old_result(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "RESULTS", tmp_path)
    publish_results("arm.md", ["# first run", "1.20x"])
    results = tmp_path / "arm.md"
    results.write_text(results.read_text() + "\n## Notes\nmeasured on a quiet machine\n")
    publish_results("arm.md", ["# second run", "1.10x"])
    text = results.read_text()
    assert text.startswith("# second run\n1.10x\n")
    assert "first run" not in text and "1.20x" not in text
    assert text.index(KEPT_BELOW) < text.index("## Notes\nmeasured on a quiet machine")
    assert text.count(KEPT_BELOW) == 1


def test_a_file_written_before_the_marker_is_kept_whole_under_the_new_result(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "RESULTS", tmp_path)
    (tmp_path / "gpu.md").write_text("# H200 run\n1.06x\n\n## An earlier H100 run\n1.17x\n")
    publish_results("gpu.md", ["# the next run", "1.04x"])
    text = (tmp_path / "gpu.md").read_text()
    assert text.startswith("# the next run\n1.04x\n\n" + KEPT_BELOW)
    assert "## Before this run (the file as it was)\n\n# H200 run\n1.06x\n\n## An earlier H100 run\n1.17x" in text
