"""benchmarks/bench_align.py in smoke mode: its inputs have the stated shape, it reports."""

from __future__ import annotations

from benchmarks import bench_align


def test_random_case_has_the_stated_density() -> None:
    logits, text, tokenizer = bench_align.random_case(2.0)
    assert logits.shape == (2 * 60 * 50, 32)
    tokens = sum(len(w) for w in text.split()) + len(text.split()) - 1
    assert abs(tokens - 2 * bench_align.TOKENS_PER_MINUTE) < 12
    assert tokenizer.id_to_token[0] == "<pad>"


def test_memory_child_reports_and_renders() -> None:
    row = bench_align.memory_child(0.1)
    assert row["frames"] == 300 and row["states"] == 2 * row["tokens"] + 1
    assert row["traced_peak_mb"] > 0 and row["rss_peak_mb"] >= row["rss_before_mb"] > 0
    md = bench_align.to_markdown({"memory": [row]})
    assert "| 0.1 min | 300 |" in md
