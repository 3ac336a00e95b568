"""Benchmark workloads: real English text, generated offline and fixed by a seed.

The text is the prose of the Python standard library's docstrings (read with
`ast`, nothing imported), which every machine has offline. Two workloads:

* single texts: a word count drawn from a log-normal distribution (median
  ``single_median_words`` words, clipped to ``[min_words, max_words]``), so most
  inputs are short queries and sentences and a tail reaches ~300-token
  passages; each text is a run of that many words starting at a sentence start.
* rerank requests: one short query and 10-50 passages, sent as pairs
  ``[query, passage]``; queries and passages have their own log-normal lengths.

The same seed gives the same texts on the same Python version (the docstrings
are the corpus); `Workload.fingerprint` identifies a workload in a report.
Length histograms in tokens come from `token_lengths` with the served model's
tokenizer, because the token count is what the engine pays for.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import sysconfig
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

# Docstring paragraphs that are code, tables or parameter lists are not prose;
# these tell them apart cheaply.
_NOT_PROSE = re.compile(r">>>|\.\.\. |::|={3,}|-{3,}|\|\s|^\s*[:@*-]", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?]$")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'’,.;:!?()-]*$")


class SingleTextSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Single-text requests: log-normal word counts (natural text lengths are skewed)."""

    count: int = 2000
    median_words: float = 22.0
    sigma: float = 0.9  # log-space spread: ~2% above 100 words, ~0.5% at the cap
    min_words: int = 3
    max_words: int = 230  # about 300 tokens of docstring English
    seed: int = 1234


class RerankSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Rerank requests: one query against 10-50 passages, sent as pairs."""

    count: int = 200
    min_passages: int = 10
    max_passages: int = 50
    query_median_words: float = 8.0
    query_sigma: float = 0.5
    query_max_words: int = 24
    passage_median_words: float = 45.0
    passage_sigma: float = 0.6
    passage_max_words: int = 180
    min_words: int = 3
    seed: int = 4321


class Workload(msgspec.Struct, frozen=True, kw_only=True):
    """A fixed list of requests. Each request is a string or a list of [a, b] pairs."""

    name: str  # "single" or "rerank"
    spec: SingleTextSpec | RerankSpec
    requests: list[str] | list[list[list[str]]]
    fingerprint: str  # sha256 of the texts, short

    @property
    def sequences_per_request(self) -> npt.NDArray[np.int64]:
        if self.name == "single":
            return np.ones(len(self.requests), dtype=np.int64)
        return np.array([len(r) for r in self.requests], dtype=np.int64)

    def texts(self) -> list[str]:
        """A single-text workload's requests, one text each."""
        if self.name != "single":
            raise ValueError(f"the {self.name} workload's requests are not single texts")
        return [request for request in self.requests if isinstance(request, str)]

    def flat_inputs(self) -> list[str] | list[tuple[str, str]]:
        """Every sequence the engine sees: texts, or (query, passage) pairs."""
        if self.name == "single":
            return self.texts()
        return [(pair[0], pair[1]) for request in self.requests if not isinstance(request, str) for pair in request]


class Corpus(msgspec.Struct, frozen=True):
    """Prose words in reading order, and the indexes where sentences start."""

    words: list[str]
    sentence_starts: npt.NDArray[np.int64]


def _prose_paragraphs(docstring: str) -> list[str]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", docstring):
        if _NOT_PROSE.search(block):
            continue
        words = block.split()
        if len(words) < 4 or not _SENTENCE_END.search(words[-1]):
            continue
        # Mostly ordinary words: identifiers and signatures tokenize unlike prose.
        if sum(bool(_WORD.match(w)) for w in words) < 0.85 * len(words):
            continue
        paragraphs.append(" ".join(words))
    return paragraphs


@functools.lru_cache(maxsize=1)
def stdlib_corpus() -> Corpus:
    """The prose of the top-level stdlib modules' docstrings, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    words: list[str] = []
    starts: list[int] = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            docstring = ast.get_docstring(node)
            if not docstring:
                continue
            for paragraph in _prose_paragraphs(docstring):
                paragraph_words = paragraph.split()
                starts.append(len(words))
                for i, word in enumerate(paragraph_words[:-1]):
                    if _SENTENCE_END.search(word) and paragraph_words[i + 1][:1].isupper():
                        starts.append(len(words) + i + 1)
                words.extend(paragraph_words)
    if len(words) < 10_000:
        raise RuntimeError(f"the standard library at {stdlib} yielded only {len(words)} words of prose")
    return Corpus(words=words, sentence_starts=np.asarray(starts, dtype=np.int64))


def _lognormal_counts(
    rng: np.random.Generator, n: int, median: float, sigma: float, low: int, high: int
) -> npt.NDArray[np.int64]:
    counts = rng.lognormal(mean=np.log(median), sigma=sigma, size=n)
    return np.clip(np.rint(counts), low, high).astype(np.int64)


def _texts(corpus: Corpus, rng: np.random.Generator, word_counts: npt.NDArray[np.int64]) -> list[str]:
    # Start at a sentence start far enough from the end to fit the longest text.
    usable = corpus.sentence_starts[corpus.sentence_starts < len(corpus.words) - int(word_counts.max(initial=1))]
    starts = rng.choice(usable, size=len(word_counts))
    words = corpus.words
    return [" ".join(words[s : s + n]) for s, n in zip(starts.tolist(), word_counts.tolist(), strict=True)]


def _fingerprint(name: str, requests: object) -> str:
    return hashlib.sha256(name.encode() + msgspec.json.encode(requests)).hexdigest()[:16]


def single_texts(spec: SingleTextSpec | None = None) -> Workload:
    spec = spec or SingleTextSpec()
    rng = np.random.default_rng(spec.seed)
    counts = _lognormal_counts(rng, spec.count, spec.median_words, spec.sigma, spec.min_words, spec.max_words)
    requests = _texts(stdlib_corpus(), rng, counts)
    return Workload(name="single", spec=spec, requests=requests, fingerprint=_fingerprint("single", requests))


def rerank_requests(spec: RerankSpec | None = None) -> Workload:
    spec = spec or RerankSpec()
    rng = np.random.default_rng(spec.seed)
    corpus = stdlib_corpus()
    n_passages = rng.integers(spec.min_passages, spec.max_passages + 1, size=spec.count)
    query_counts = _lognormal_counts(
        rng, spec.count, spec.query_median_words, spec.query_sigma, spec.min_words, spec.query_max_words
    )
    passage_counts = _lognormal_counts(
        rng,
        int(n_passages.sum()),
        spec.passage_median_words,
        spec.passage_sigma,
        spec.min_words,
        spec.passage_max_words,
    )
    queries = _texts(corpus, rng, query_counts)
    passages = _texts(corpus, rng, passage_counts)
    bounds = np.concatenate([[0], np.cumsum(n_passages)]).tolist()
    requests = [
        [[query, passage] for passage in passages[bounds[i] : bounds[i + 1]]] for i, query in enumerate(queries)
    ]
    return Workload(name="rerank", spec=spec, requests=requests, fingerprint=_fingerprint("rerank", requests))


def token_lengths(
    workload: Workload, tokenizer_json: Path | str, max_length: int | None = None
) -> npt.NDArray[np.int64]:
    """Tokens per sequence (special tokens included) as the model's tokenizer counts them.

    With ``max_length`` the counts are truncated as the server would truncate them.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    encodings = tokenizer.encode_batch(workload.flat_inputs())
    return np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))


def length_histogram(lengths: npt.NDArray[np.int64], edges: list[int] | None = None) -> dict[str, int]:
    """Counts per token-length range, for the report ("1-16": n, "17-32": n, ...)."""
    edges = edges or [16, 32, 64, 128, 256, 512]
    counts: dict[str, int] = {}
    low = 1
    for high in edges:
        counts[f"{low}-{high}"] = int(((lengths >= low) & (lengths <= high)).sum())
        low = high + 1
    counts[f">{edges[-1]}"] = int((lengths > edges[-1]).sum())
    return counts
