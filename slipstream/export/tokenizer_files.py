"""Write the fast tokenizer.json the runtime loads, and describe it in the manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slipstream.export.errors import ExportError
from slipstream.manifest import TokenizerInfo

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast


def runtime_tokenizer(tokenizer: PreTrainedTokenizerFast) -> Tokenizer:
    """A copy of the Rust tokenizer with truncation and padding off: the service
    sets both at runtime (bucket lengths, pair truncation strategy)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def write_tokenizer(tokenizer: PreTrainedTokenizerFast, path: Path) -> Tokenizer:
    rust_tokenizer = runtime_tokenizer(tokenizer)
    rust_tokenizer.save(str(path))
    return rust_tokenizer


def tokenizer_info(tokenizer: PreTrainedTokenizerFast, *, uses_token_type_ids: bool) -> TokenizerInfo:
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        raise ExportError("the tokenizer has no pad token; batching needs one")
    special_tokens = {name: value for name, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}
    return TokenizerInfo(
        pad_token=str(tokenizer.pad_token),
        pad_token_id=int(tokenizer.pad_token_id),
        special_tokens=special_tokens,
        uses_token_type_ids=uses_token_type_ids,
    )


def check_tokenizer_parity(
    reference: PreTrainedTokenizerFast,
    written: Tokenizer,
    singles: Sequence[str],
    pairs: Sequence[tuple[str, str]],
) -> None:
    """Raise ExportError unless the written tokenizer encodes singles and pairs
    exactly as transformers does (ids, token types, attention mask)."""
    cases: list[tuple[str, str | None]] = [(text, None) for text in singles]
    cases += [(first, second) for first, second in pairs]
    encodings = written.encode_batch([text if second is None else (text, second) for text, second in cases])
    for (text, second), encoding in zip(cases, encodings, strict=True):
        expected = reference(text, second, return_token_type_ids=True)
        got_types = encoding.type_ids
        if list(expected["input_ids"]) != encoding.ids or list(expected["token_type_ids"]) != list(got_types):
            raise ExportError(
                "the written tokenizer.json does not reproduce transformers' encoding of "
                f"{(text, second)!r}; the model's tokenizer depends on Python-side logic "
                "that a fast tokenizer cannot express"
            )
