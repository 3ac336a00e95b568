"""Which Hugging Face architectures Slipstream exports, and what it needs to know
about each of them.

Every entry is exercised by tests/export (a tiny random model per architecture is
exported and checked for parity with PyTorch). optimum's exporter knows more
model types; they are not listed here because nothing checks them.
"""

from __future__ import annotations

import msgspec


class ArchitectureSpec(msgspec.Struct, frozen=True, kw_only=True):
    model_type: str  # transformers' config.model_type
    display_name: str
    # Model types whose position ids start after the padding index (RoBERTa
    # family): max_position_embeddings - (pad_token_id + 1) positions are usable.
    position_offset_from_padding: bool = False
    # Whether onnxruntime.transformers' BERT optimizer can fuse this model's
    # self-attention into one Attention op. It needs symbolic shape inference,
    # which takes seconds on graphs with relative or rotary attention where it
    # fuses nothing more (DeBERTa, MPNet, ModernBERT): there it is skipped, and
    # only SkipLayerNormalization / Gelu fusions apply.
    attention_fusion: bool = True


SUPPORTED_ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.model_type: spec
    for spec in (
        ArchitectureSpec(model_type="bert", display_name="BERT"),
        ArchitectureSpec(model_type="distilbert", display_name="DistilBERT"),
        ArchitectureSpec(model_type="roberta", display_name="RoBERTa", position_offset_from_padding=True),
        ArchitectureSpec(
            model_type="xlm-roberta",
            display_name="XLM-RoBERTa",
            position_offset_from_padding=True,
        ),
        ArchitectureSpec(model_type="deberta-v2", display_name="DeBERTa-v2 / DeBERTa-v3", attention_fusion=False),
        ArchitectureSpec(model_type="electra", display_name="ELECTRA"),
        ArchitectureSpec(model_type="albert", display_name="ALBERT"),
        ArchitectureSpec(
            model_type="mpnet",
            display_name="MPNet",
            position_offset_from_padding=True,
            attention_fusion=False,
        ),
        ArchitectureSpec(model_type="modernbert", display_name="ModernBERT", attention_fusion=False),
    )
}


def supported_model_types() -> list[str]:
    return sorted(SUPPORTED_ARCHITECTURES)
