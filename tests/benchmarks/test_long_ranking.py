"""`python -m benchmarks.long_ranking` on a tiny one-label model: every mode ranks every case.

Behaviour only: a random tiny model ranks at random, so no rank is checked but that it is one of six.
"""

from __future__ import annotations

from benchmarks.long_ranking import long_passage_cases, main
from tests.batching.reference_windows import plain_tokenizer


def test_cases_put_the_relevant_paragraph_past_the_window_and_the_rest_as_long(tiny_artifact_factory):
    tokenizer = plain_tokenizer(tiny_artifact_factory("bert", 1, ("fp32",)) / "tokenizer.json")
    for query, relevant, long, irrelevant in long_passage_cases(3, tokenizer, window=128):
        assert long.index(relevant) > 0 and len(tokenizer.encode(query, long[: long.index(relevant)]).ids) > 128
        assert len(irrelevant) == 5 and relevant not in " ".join(irrelevant)
        assert all(len(text.split()) > len(relevant.split()) for text in irrelevant)
    assert long_passage_cases(3, tokenizer, window=128) == long_passage_cases(3, tokenizer, window=128)


def test_it_ranks_truncated_then_by_each_window_and_prints_a_row_per_mode(tiny_artifact_factory, tmp_path, capsys):
    artifact = tiny_artifact_factory("bert", 1, ("fp32",))
    assert main(["--artifact", str(artifact), "--cases", "2", "--windows", "128,512", "--log-dir", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| truncate") or "chunk" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| truncate", "| chunk, windows of 128", "| chunk, windows of 512"]
    for row in rows:
        ranks = row.rstrip(" |").split(" | ")[-1].split()
        assert len(ranks) == 2 and all(0 <= int(rank) <= 5 for rank in ranks), row
