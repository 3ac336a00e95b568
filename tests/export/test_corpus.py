"""Training text: distinct prose from the standard library, the same on every build."""

from __future__ import annotations

import random

import pytest

from slipstream.export.corpus import CorpusSettings, build_passages, draw_query


@pytest.fixture(scope="module")
def passages():
    return build_passages(CorpusSettings())


def test_corpus_is_distinct_prose_from_the_standard_library_within_the_length_limits(passages):
    settings = CorpusSettings()
    assert len(passages) > 2000
    assert len({p.text for p in passages}) == len(passages)
    assert len({p.document for p in passages}) > 500
    for passage in passages:
        words = passage.text.split(" ")
        assert settings.min_passage_words <= len(words) <= settings.max_passage_words
        assert ">>>" not in passage.text and "::=" not in passage.text


def test_corpus_is_the_same_on_every_build(passages):
    assert build_passages(CorpusSettings()) == passages


def test_sentence_queries_come_from_their_passage_and_their_positive_leaves_the_sentence_out(passages):
    settings = CorpusSettings(key_phrase_share=0.0)
    rng = random.Random(0)
    queries = [q for i, p in enumerate(passages[:400]) if (q := draw_query(p, i, rng, settings))]
    assert len(queries) > 100
    split_from_rest = 0
    for query in queries:
        source = passages[query.passage_index]
        assert query.text in source.text
        assert settings.min_query_words <= len(query.text.split(" ")) <= settings.max_query_words
        if query.positive != source.text:
            split_from_rest += 1
            assert query.text not in query.positive
    assert split_from_rest > len(queries) // 5


def test_key_phrase_queries_are_a_few_words_of_their_passage(passages):
    settings = CorpusSettings(key_phrase_share=1.0)
    rng = random.Random(0)
    queries = [q for i, p in enumerate(passages[:200]) if (q := draw_query(p, i, rng, settings))]
    short = [q for q in queries if len(q.text.split(" ")) <= 6]
    assert len(short) > len(queries) // 2
    for query in short:
        assert all(word in passages[query.passage_index].text for word in query.text.split(" "))
