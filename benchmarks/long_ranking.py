"""How well a served reranker ranks long documents: truncated, and chunked by windows of each length.

    python -m benchmarks.long_ranking [--artifact DIR] [--cases 16] [--windows 96,128,256,512] [--variant int8]

The cases are those of the slow test on the default reranker
(`tests/default_model/test_real_model.py`). Per case a query (the first 8
words of a paragraph of the Python documentation, the default reranker's
training text) and six passages: one long relevant passage (paragraphs of
other documents until they fill the model's window with the query, then that
paragraph, then one more: the paragraph starts past the window, so truncation
never shows it) and five as long of other documents only. Counted per mode:
how often the long relevant passage ranks first, and how often the paragraph
alone beats the five long irrelevant passages.

One `slipstream serve` of the artifact per window (`--chunk-window`); the
truncated ranking comes from the first. Prints a Markdown table and each
case's rank (0 = first) per mode. This is a quality measurement, not a speed
one: its numbers do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import httpx
import msgspec
from tokenizers import Tokenizer

from benchmarks.servers import free_port, running_server
from slipstream.defaults import DEFAULT_ARTIFACT_DIR
from slipstream.export.corpus import CorpusSettings, build_passages
from slipstream.manifest import load_manifest

# (query, relevant paragraph, long relevant passage, long irrelevant passages)
Case = tuple[str, str, str, list[str]]


def long_passage_cases(count: int, tokenizer: Tokenizer, window: int, seed: int = 17) -> list[Case]:
    """`count` cases (see the module docstring) whose relevant paragraph starts past `window` tokens."""
    passages = build_passages(CorpusSettings(max_passage_words=60))
    rng = random.Random(seed)

    def others(document: str, n: int) -> list[str]:
        picked: list[str] = []
        while len(picked) < n:
            passage = rng.choice(passages)
            if passage.document != document:
                picked.append(passage.text)
        return picked

    cases = []
    for _ in range(count):
        relevant = rng.choice([p for p in passages if len(p.text.split()) > 25])
        query = " ".join(relevant.text.split()[:8])
        before = others(relevant.document, 15)
        while len(tokenizer.encode(query, " ".join(before)).ids) <= window:
            before += others(relevant.document, 1)
        long_relevant = " ".join([*before, relevant.text, *others(relevant.document, 1)])
        irrelevant = [" ".join(others(relevant.document, len(before) + 1)) for _ in range(5)]
        cases.append((query, relevant.text, long_relevant, irrelevant))
    return cases


def rank_of_first(url: str, query: str, texts: list[str], long_text: str) -> int:
    """Where texts[0] ranks (0 = first) in the server's /rerank answer."""
    response = httpx.post(f"{url}/rerank", json={"query": query, "texts": texts, "long_text": long_text}, timeout=300)
    response.raise_for_status()
    return [rank["index"] for rank in response.json()].index(0)


class Row(msgspec.Struct, frozen=True, kw_only=True):
    mode: str  # "truncate" or "chunk, windows of N"
    long_first: list[int]  # per case: the long relevant passage's rank
    short_first: list[int] | None  # per case: the paragraph alone's rank among the long irrelevant ones


def measure(artifact: Path, cases: list[Case], windows: list[int], serve_flags: list[str], log_dir: Path) -> list[Row]:
    rows: list[Row] = []
    for number, window in enumerate(windows):
        port = free_port()
        command = [sys.executable, "-m", "slipstream.cli", "serve", str(artifact), "--port", str(port)]
        command += ["--host", "127.0.0.1", "--log-level", "warning", "--chunk-window", str(window), *serve_flags]
        with running_server(command, port, log_dir / f"serve-window-{window}.log"):
            url = f"http://127.0.0.1:{port}"
            if number == 0:
                rows.append(
                    Row(
                        mode="truncate",
                        long_first=[rank_of_first(url, q, [long, *other], "truncate") for q, _, long, other in cases],
                        short_first=None,
                    )
                )
            rows.append(
                Row(
                    mode=f"chunk, windows of {window}",
                    long_first=[rank_of_first(url, q, [long, *other], "chunk") for q, _, long, other in cases],
                    short_first=[rank_of_first(url, q, [short, *other], "chunk") for q, short, _, other in cases],
                )
            )
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| mode | long relevant passage first | the paragraph alone first | ranks of the long relevant passage |",
        "|---|---:|---:|---|",
    ]
    for row in rows:
        n = len(row.long_first)
        short = "" if row.short_first is None else f"{row.short_first.count(0)} / {n}"
        ranks = " ".join(map(str, row.long_first))
        lines.append(f"| {row.mode} | {row.long_first.count(0)} / {n} | {short} | {ranks} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_ranking", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT_DIR)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--windows", default="96,128,256,512", help="comma-separated --chunk-window values")
    parser.add_argument("--variant", default=None, help="served variant (default: the engine's choice)")
    parser.add_argument("--log-dir", type=Path, default=Path("benchmarks/results/long-ranking/logs"))
    args = parser.parse_args(argv)

    manifest = load_manifest(args.artifact)
    tokenizer = Tokenizer.from_file(str(args.artifact / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    cases = long_passage_cases(args.cases, tokenizer, manifest.max_sequence_length)
    windows = [int(w) for w in args.windows.split(",")]
    flags = [] if args.variant is None else ["--variant", args.variant]
    print(markdown(measure(args.artifact, cases, windows, flags, args.log_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
