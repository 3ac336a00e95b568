"""Tiny random `*ForSequenceClassification` models with locally trained tokenizers.

Every architecture Slipstream supports gets a 2-layer, 32-wide model whose
weights are drawn with `initializer_range=0.2` (ten times the usual): with the
default 0.02 a tiny random model returns nearly the same logits for every input,
and a parity test could not notice swapped or mis-tokenized inputs.

Tokenizers are trained on `slipstream.export.canned_inputs.TRAINING_TEXT` with
the `tokenizers` library, in the family each architecture really uses
(WordPiece, byte-level BPE or SentencePiece-style Unigram), so that special
tokens and pair templates are the real ones. Nothing touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers.implementations import BertWordPieceTokenizer, ByteLevelBPETokenizer

from slipstream.export.canned_inputs import TRAINING_TEXT

HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 64
MAX_POSITIONS = 512
INIT_RANGE = 0.2
VOCAB_SIZE = 400


def _wordpiece_vocab(directory: Path, special_tokens: list[str], unk: str) -> Path:
    trainer_tokenizer = BertWordPieceTokenizer(lowercase=True, unk_token=unk)
    trainer_tokenizer.train_from_iterator(
        list(TRAINING_TEXT), vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=special_tokens
    )
    trainer_tokenizer.save_model(str(directory))
    return directory / "vocab.txt"


def _unigram_tokenizer(
    special_tokens: list[str], unk: str, cls: str, sep: str, *, lowercase: bool, roberta_pairs: bool
) -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    steps = [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    if lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=special_tokens, unk_token=unk, show_progress=False
    )
    tokenizer.train_from_iterator(list(TRAINING_TEXT), trainer)
    ids = {token: tokenizer.token_to_id(token) for token in (cls, sep)}
    if roberta_pairs:  # XLM-R: <s> A </s></s> B </s>, all type 0
        pair = f"{cls} $A {sep} {sep} $B {sep}"
    else:  # ALBERT / DeBERTa: [CLS] A [SEP] B [SEP], B is type 1
        pair = f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=pair, special_tokens=list(ids.items())
    )
    return tokenizer


def _bert_like(directory: Path, tokenizer_class: type) -> transformers.PreTrainedTokenizerFast:
    vocab = _wordpiece_vocab(directory, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]")
    return tokenizer_class(vocab_file=str(vocab))


def _roberta(directory: Path) -> transformers.PreTrainedTokenizerFast:
    trainer_tokenizer = ByteLevelBPETokenizer()
    trainer_tokenizer.train_from_iterator(
        list(TRAINING_TEXT),
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    vocab, merges = trainer_tokenizer.save_model(str(directory))
    return transformers.RobertaTokenizerFast(vocab_file=vocab, merges_file=merges)


def _mpnet(directory: Path) -> transformers.PreTrainedTokenizerFast:
    vocab = _wordpiece_vocab(directory, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"], "[UNK]")
    return transformers.MPNetTokenizerFast(vocab_file=str(vocab))


def _xlm_roberta(directory: Path) -> transformers.PreTrainedTokenizerFast:
    del directory
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = _unigram_tokenizer(specials, "<unk>", "<s>", "</s>", lowercase=False, roberta_pairs=True)
    return transformers.XLMRobertaTokenizerFast(tokenizer_object=tokenizer)


def _albert(directory: Path) -> transformers.PreTrainedTokenizerFast:
    del directory
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = _unigram_tokenizer(specials, "<unk>", "[CLS]", "[SEP]", lowercase=True, roberta_pairs=False)
    return transformers.AlbertTokenizerFast(tokenizer_object=tokenizer)


def _deberta_v2(directory: Path) -> transformers.PreTrainedTokenizerFast:
    del directory
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    tokenizer = _unigram_tokenizer(specials, "[UNK]", "[CLS]", "[SEP]", lowercase=False, roberta_pairs=False)
    return transformers.DebertaV2TokenizerFast(tokenizer_object=tokenizer)


def _common(tokenizer: transformers.PreTrainedTokenizerFast) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "initializer_range": INIT_RANGE,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _bert_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.BertConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        **_common(tokenizer),
    )


def _distilbert_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.DistilBertConfig(
        dim=HIDDEN,
        n_layers=LAYERS,
        n_heads=HEADS,
        hidden_dim=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        **_common(tokenizer),
    )


def _roberta_config(
    config_class: type,
) -> Callable[[transformers.PreTrainedTokenizerFast], transformers.PretrainedConfig]:
    def build(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
        return config_class(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            # Positions start after the padding index: 512 usable positions.
            max_position_embeddings=MAX_POSITIONS + tokenizer.pad_token_id + 1,
            type_vocab_size=1,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **_common(tokenizer),
        )

    return build


def _deberta_v2_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    # Shaped like DeBERTa-v3: relative attention only, no token_type_ids.
    return transformers.DebertaV2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        relative_attention=True,
        position_buckets=64,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        type_vocab_size=0,
        **_common(tokenizer),
    )


def _electra_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.ElectraConfig(
        embedding_size=16,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        **_common(tokenizer),
    )


def _albert_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.AlbertConfig(
        embedding_size=16,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **_common(tokenizer),
    )


def _mpnet_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.MPNetConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=MAX_POSITIONS + tokenizer.pad_token_id + 1,
        relative_attention_num_buckets=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **_common(tokenizer),
    )


def _modernbert_config(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.PretrainedConfig:
    return transformers.ModernBertConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        # A window shorter than the tests' longest inputs, so local attention is exercised.
        local_attention=64,
        global_attn_every_n_layers=2,
        bos_token_id=tokenizer.cls_token_id,
        cls_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id,
        **_common(tokenizer),
    )


TokenizerBuilder = Callable[[Path], transformers.PreTrainedTokenizerFast]
ConfigBuilder = Callable[[transformers.PreTrainedTokenizerFast], transformers.PretrainedConfig]

ARCHITECTURES: dict[str, tuple[TokenizerBuilder, ConfigBuilder, str]] = {
    "bert": (lambda d: _bert_like(d, transformers.BertTokenizerFast), _bert_config, "BertForSequenceClassification"),
    "distilbert": (
        lambda d: _bert_like(d, transformers.DistilBertTokenizerFast),
        _distilbert_config,
        "DistilBertForSequenceClassification",
    ),
    "roberta": (_roberta, _roberta_config(transformers.RobertaConfig), "RobertaForSequenceClassification"),
    "xlm-roberta": (
        _xlm_roberta,
        _roberta_config(transformers.XLMRobertaConfig),
        "XLMRobertaForSequenceClassification",
    ),
    "deberta-v2": (_deberta_v2, _deberta_v2_config, "DebertaV2ForSequenceClassification"),
    "electra": (
        lambda d: _bert_like(d, transformers.ElectraTokenizerFast),
        _electra_config,
        "ElectraForSequenceClassification",
    ),
    "albert": (_albert, _albert_config, "AlbertForSequenceClassification"),
    "mpnet": (_mpnet, _mpnet_config, "MPNetForSequenceClassification"),
    "modernbert": (
        lambda d: _bert_like(d, transformers.BertTokenizerFast),
        _modernbert_config,
        "ModernBertForSequenceClassification",
    ),
}


def build_tiny_model(
    directory: Path,
    model_type: str = "bert",
    *,
    num_labels: int = 3,
    problem_type: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random classifier and its tokenizer to `directory` (save_pretrained)."""
    tokenizer_builder, config_builder, class_name = ARCHITECTURES[model_type]
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / "_tokenizer_training"
    scratch.mkdir()
    tokenizer = tokenizer_builder(scratch)
    config = config_builder(tokenizer)
    config.num_labels = num_labels
    config.problem_type = problem_type
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    return directory


def write_sentencepiece_deberta_tokenizer(directory: Path) -> None:
    """Save a slow, SentencePiece-only DeBERTa-v2 tokenizer (spm.model, no
    tokenizer.json) to `directory`, like the DeBERTa-v3 checkpoints on the hub."""
    import sentencepiece

    scratch = directory / "_spm_training"
    scratch.mkdir(parents=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(TRAINING_TEXT) * 3),
        model_prefix=str(scratch / "spm"),
        vocab_size=300,
        model_type="unigram",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"],
        minloglevel=2,
    )
    transformers.DebertaV2Tokenizer(vocab_file=str(scratch / "spm.model")).save_pretrained(directory)
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
