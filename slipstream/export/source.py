"""Load the source model, its config and its tokenizer, turning every way this
can fail into an ExportError with a one-line message."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slipstream.export.architectures import SUPPORTED_ARCHITECTURES, supported_model_types
from slipstream.export.errors import ExportError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

_LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


@dataclass(frozen=True, kw_only=True)
class SourceModel:
    """A loaded PyTorch classifier and the fast tokenizer that goes with it."""

    model_ref: str
    revision: str | None
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    # True when the checkpoint had no trained classification head and a random
    # one was created because --num-labels was given.
    head_is_random: bool


def _looks_local(model_ref: str) -> bool:
    return model_ref.startswith(_LOCAL_PREFIXES) or Path(model_ref).exists()


def _hub_is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_config(model_ref: str) -> PretrainedConfig:
    from transformers import AutoConfig

    if _looks_local(model_ref):
        path = Path(model_ref).expanduser()
        if not path.exists():
            raise ExportError(f"{model_ref}: no such directory")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ExportError(
                f"{model_ref} is not a model directory: it has no config.json "
                "(save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR))"
            )
    try:
        config: PretrainedConfig = AutoConfig.from_pretrained(os.path.expanduser(model_ref))
        return config
    except ValueError as exc:  # config.json without a model_type transformers knows
        raise ExportError(
            f"{model_ref}: config.json does not describe a transformers model ({_first_line(exc)})"
        ) from None
    except OSError as exc:
        if _looks_local(model_ref):
            raise ExportError(f"{model_ref}: cannot read the model config ({_first_line(exc)})") from None
        message = str(exc)
        if _hub_is_offline() or "connect" in message or "offline" in message:
            raise ExportError(
                f"{model_ref!r} is not a local directory and the Hugging Face hub cannot be "
                "reached (offline or HF_HUB_OFFLINE=1); pass a directory saved with save_pretrained"
            ) from None
        raise ExportError(
            f"{model_ref!r} is neither a local directory nor a model id on the Hugging Face hub"
        ) from None


def check_architecture(config: PretrainedConfig) -> None:
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"architecture {config.model_type!r} is not supported; supported model types: "
            + ", ".join(supported_model_types())
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_source(model_ref: str, *, num_labels: int | None = None) -> SourceModel:
    """Load the PyTorch classifier and its fast tokenizer from a directory or hub id."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = load_config(model_ref)
    check_architecture(config)
    has_head = any(name.endswith("ForSequenceClassification") for name in (config.architectures or []))
    if not has_head and num_labels is None:
        raise ExportError(
            f"{model_ref} has no sequence-classification head (architectures: "
            f"{config.architectures}); train one, or pass --num-labels N to export with a new, "
            "randomly initialised head"
        )
    if has_head and num_labels is not None and num_labels != config.num_labels:
        raise ExportError(
            f"{model_ref} has a trained head with {config.num_labels} labels; "
            f"--num-labels {num_labels} does not match (omit it)"
        )
    load_kwargs: dict[str, object] = {}
    if num_labels is not None:
        load_kwargs["num_labels"] = num_labels
    if config.model_type == "modernbert":
        # The tracer cannot follow flash/sdpa kernels chosen at runtime; eager
        # attention exports to plain ONNX ops.
        load_kwargs["attn_implementation"] = "eager"
    source_path = os.path.expanduser(model_ref)
    try:
        model, loading_info = AutoModelForSequenceClassification.from_pretrained(
            source_path, output_loading_info=True, dtype=torch.float32, **load_kwargs
        )
    except (OSError, ValueError) as exc:
        raise ExportError(f"{model_ref}: cannot load the model weights ({_first_line(exc)})") from None
    missing = list(loading_info.get("missing_keys", []))
    head_is_random = bool(missing)
    if head_is_random and num_labels is None:
        raise ExportError(
            f"{model_ref}: the checkpoint lacks trained weights for {sorted(missing)[:3]}; "
            "train a head, or pass --num-labels N to export with a randomly initialised one"
        )
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source_path, use_fast=True)
    except Exception as exc:  # transformers raises many types for a bad tokenizer
        raise ExportError(f"{model_ref}: cannot load its tokenizer ({_first_line(exc)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"{model_ref}: its tokenizer could not be converted to a fast tokenizer "
            "(install sentencepiece/protobuf, or save a tokenizer.json with the model)"
        )
    revision = getattr(config, "_commit_hash", None)
    return SourceModel(
        model_ref=model_ref,
        revision=revision,
        model=model,
        tokenizer=tokenizer,
        head_is_random=head_is_random,
    )
