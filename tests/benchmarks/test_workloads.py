"""The benchmark workloads: real English text, fixed by a seed, with the documented length spread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.workloads import (
    RerankSpec,
    SingleTextSpec,
    length_histogram,
    rerank_requests,
    single_texts,
    stdlib_corpus,
    token_lengths,
)


def test_the_corpus_is_prose_from_the_standard_library() -> None:
    corpus = stdlib_corpus()
    assert len(corpus.words) > 10_000
    assert len(corpus.sentence_starts) > 1_000
    # Sentences start with a capital letter: the text reads as English, not code.
    starts = [corpus.words[i] for i in corpus.sentence_starts[:500].tolist()]
    assert np.mean([w[:1].isupper() for w in starts]) > 0.9
    assert not any(">>>" in w for w in corpus.words)


def test_single_texts_are_fixed_by_the_seed() -> None:
    spec = SingleTextSpec(count=200, seed=7)
    first, again = single_texts(spec), single_texts(spec)
    assert first.requests == again.requests and first.fingerprint == again.fingerprint
    other = single_texts(SingleTextSpec(count=200, seed=8))
    assert other.requests != first.requests and other.fingerprint != first.fingerprint


def test_single_texts_spread_from_short_queries_to_long_passages() -> None:
    spec = SingleTextSpec(count=2000)
    workload = single_texts(spec)
    words = np.array([len(text.split()) for text in workload.requests if isinstance(text, str)])
    assert words.min() >= spec.min_words and words.max() <= spec.max_words
    assert np.median(words) == pytest.approx(spec.median_words, rel=0.2)
    assert (words <= 10).mean() > 0.1  # query-like
    assert (words >= 100).mean() > 0.02  # passage-like
    assert len(set(workload.requests)) > 0.95 * len(workload.requests)
    assert workload.sequences_per_request.tolist() == [1] * spec.count


def test_rerank_requests_pair_one_query_with_10_to_50_passages() -> None:
    spec = RerankSpec(count=50)
    workload = rerank_requests(spec)
    assert len(workload.requests) == 50
    for request in workload.requests:
        assert spec.min_passages <= len(request) <= spec.max_passages
        assert all(len(pair) == 2 for pair in request)
        assert len({pair[0] for pair in request}) == 1, "one query per request"
        assert len({pair[1] for pair in request}) > 1
    flat = workload.flat_inputs()
    assert len(flat) == int(workload.sequences_per_request.sum())
    assert rerank_requests(spec).fingerprint == workload.fingerprint


def test_token_lengths_count_special_tokens_and_respect_truncation(tiny_model_factory) -> None:
    tokenizer = Path(tiny_model_factory("bert")) / "tokenizer.json"
    workload = single_texts(SingleTextSpec(count=300))
    lengths = token_lengths(workload, tokenizer)
    words = np.array([len(t.split()) for t in workload.requests if isinstance(t, str)])
    assert len(lengths) == 300
    assert (lengths >= words + 2).all(), "[CLS] and [SEP] plus at least a token per word"
    truncated = token_lengths(workload, tokenizer, max_length=64)
    assert truncated.max() == 64 and (truncated == np.minimum(lengths, 64)).all()


def test_length_histogram_counts_every_sequence_once() -> None:
    lengths = np.array([1, 16, 17, 64, 65, 300, 600])
    histogram = length_histogram(lengths, edges=[16, 64, 512])
    assert histogram == {"1-16": 2, "17-64": 2, "65-512": 2, ">512": 1}
