"""Real English text from what every Python install has: the default reranker's
training text (`slipstream.default_model`) and the export's fidelity set
(`slipstream.export.fidelity`).

Passages are prose paragraphs of the Python documentation that ships with the
interpreter: the language-reference topics behind ``help()`` (``pydoc_data``)
and the docstrings of a fixed list of standard-library modules. Queries are
drawn from passages: either one sentence of a passage (the passage minus that
sentence is then its positive) or a short key phrase cut from it.

Everything here is plain Python and deterministic for a given interpreter
version and seed; the cache key of the default model includes both. The
documentation is read in a fresh interpreter, because libraries patch the
standard library when imported (transformers adds methods to
`logging.Logger`, others replace `inspect` functions), and the text must not
depend on what the calling process imported. It lives
in the export stage because export may not import the default-model build,
while the build may import export.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator

import msgspec

# Modules whose docstrings are prose and whose import has no side effects
# (no `this`, `antigravity`, GUI toolkits or platform-only modules).
DOCSTRING_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "builtins",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email.message",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "http.cookies",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "math",
    "mimetypes",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
)

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_WHITESPACE = re.compile(r"\s+")
# Sentence ends: a full stop, question or exclamation mark followed by a space
# and a capital letter (keeps "e.g. foo" and "os.path" together).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
# Markers of code, grammar or tables rather than prose.
_NOT_PROSE = re.compile(r">>>|::=|\.\.\. |^\s*[-=*+|]{3,}|[{}\[\]]{2,}|\|", re.MULTILINE)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "for",
        "from",
        "has",
        "have",
        "if",
        "in",
        "is",
        "it",
        "its",
        "may",
        "not",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "which",
        "will",
        "with",
        "when",
        "where",
        "there",
        "these",
        "those",
        "than",
        "then",
        "so",
        "such",
        "also",
        "any",
        "all",
        "each",
        "into",
        "other",
        "only",
        "one",
        "two",
        "used",
        "use",
        "using",
    ]
)


class Passage(msgspec.Struct, frozen=True):
    text: str
    document: str  # where it came from (topic or object); negatives come from other documents


class Query(msgspec.Struct, frozen=True):
    text: str
    positive: str  # the passage text this query was drawn from (minus the query sentence)
    document: str
    passage_index: int  # index of the source passage in the passage list


class CorpusSettings(msgspec.Struct, frozen=True, kw_only=True):
    min_passage_words: int = 10
    max_passage_words: int = 24  # keeps pairs short: training cost grows with length
    min_query_words: int = 3
    max_query_words: int = 14
    # Share of queries that are a key phrase (a few consecutive words) rather than a sentence.
    key_phrase_share: float = 0.35


def _is_prose(paragraph: str) -> bool:
    if _NOT_PROSE.search(paragraph):
        return False
    words = _WORD.findall(paragraph)
    # Mostly words, not identifiers, numbers or punctuation.
    return len(words) >= 0.6 * len(paragraph.split())


def _normalise(paragraph: str) -> str:
    return _WHITESPACE.sub(" ", paragraph).strip()


def _clip_to_words(text: str, max_words: int) -> str:
    """Cut at a sentence end within max_words when possible, else at max_words."""
    words = text.split(" ")
    if len(words) <= max_words:
        return text
    clipped = " ".join(words[:max_words])
    last_end = max(clipped.rfind(". "), clipped.rfind("? "), clipped.rfind("! "))
    if last_end > len(clipped) // 2:
        return clipped[: last_end + 1]
    return clipped


@functools.cache
def _stdlib_documents() -> tuple[tuple[str, str], ...]:
    """(document name, raw text) for every topic and docstring, in a fixed order, as a fresh interpreter sees them."""
    reader = subprocess.run(
        [sys.executable, "-m", "slipstream.export.corpus"], capture_output=True, check=True, timeout=300
    )
    return tuple((name, text) for name, text in json.loads(reader.stdout))


def _read_stdlib_documents() -> Iterator[tuple[str, str]]:
    """What `_stdlib_documents` reads, from this interpreter's own modules."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"topic:{name}", topics[name]
    for module_name in DOCSTRING_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # e.g. sqlite3 or ssl missing from a minimal build
            continue
        if module.__doc__:
            yield f"module:{module_name}", module.__doc__
        for attr_name in sorted(vars(module)):
            if attr_name.startswith("_"):
                continue
            obj = getattr(module, attr_name)
            if getattr(obj, "__module__", module_name) != module.__name__:
                continue  # re-exported from elsewhere: counted at its home module
            doc = inspect.getdoc(obj) if callable(obj) or inspect.isclass(obj) else None
            if doc:
                yield f"{module_name}.{attr_name}", doc
            if inspect.isclass(obj):
                for method_name in sorted(vars(obj)):
                    if method_name.startswith("_"):
                        continue
                    method_doc = inspect.getdoc(getattr(obj, method_name, None))
                    if method_doc and method_doc != doc:
                        yield f"{module_name}.{attr_name}.{method_name}", method_doc


def build_passages(settings: CorpusSettings) -> list[Passage]:
    """Distinct prose paragraphs of the standard library's documentation."""
    seen: set[str] = set()
    passages: list[Passage] = []
    for document, raw in _stdlib_documents():
        for paragraph in _PARAGRAPH_BREAK.split(raw):
            if not _is_prose(paragraph):
                continue
            text = _clip_to_words(_normalise(paragraph), settings.max_passage_words)
            if len(text.split(" ")) < settings.min_passage_words or text in seen:
                continue
            seen.add(text)
            passages.append(Passage(text=text, document=document))
    return passages


def _key_phrase(sentence: str, rng: random.Random, settings: CorpusSettings) -> str | None:
    """A few consecutive words of the sentence that start and end on content words."""
    words = [w.strip(".,;:()\"'`*") for w in sentence.split(" ")]
    content = [i for i, w in enumerate(words) if w.lower() not in _STOPWORDS and _WORD.fullmatch(w)]
    if len(content) < 2:
        return None
    start = rng.choice(content[:-1])
    ends = [i for i in content if start < i <= start + 5]
    if not ends:
        return None
    return " ".join(words[start : rng.choice(ends) + 1])


def draw_query(passage: Passage, index: int, rng: random.Random, settings: CorpusSettings) -> Query | None:
    """A query drawn from one passage, or None when the passage offers none."""
    sentences = [s for s in _SENTENCE_END.split(passage.text) if s]
    usable = [s for s in sentences if settings.min_query_words <= len(s.split(" ")) <= settings.max_query_words]
    if not usable:
        return None
    sentence = rng.choice(usable)
    rest = " ".join(s for s in sentences if s is not sentence)
    if rng.random() < settings.key_phrase_share:
        phrase = _key_phrase(sentence, rng, settings)
        if phrase:
            # A key phrase is a keyword search: the passage keeps its sentence.
            return Query(text=phrase, positive=passage.text, document=passage.document, passage_index=index)
    # A sentence query matches the rest of its passage, so the pair is not a copy.
    positive = rest if len(rest.split(" ")) >= settings.min_passage_words else passage.text
    return Query(text=sentence.rstrip("."), positive=positive, document=passage.document, passage_index=index)


if __name__ == "__main__":  # `_stdlib_documents`' fresh interpreter
    json.dump(list(_read_stdlib_documents()), sys.stdout)
