"""Tokenizers: load one by hub name or path, or train a new vocabulary on raw text."""

from __future__ import annotations

from collections.abc import Iterable

from xlt.errors import XltError
from xlt.models.load import resolve_name

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_name(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise XltError(f"tokenizer {name_or_path}: cannot load ({str(e).splitlines()[0][:200]})") from None
    if not tok.is_fast:
        raise XltError(f"tokenizer {name_or_path}: xlt needs a fast tokenizer (offset mappings)")
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, kind: str = "wordpiece", lowercase: bool = True):
    """A BERT-style fast tokenizer with a vocabulary learned from `texts`.

    Both kinds use BERT's pre-tokenizer (whitespace, punctuation, CJK characters split),
    so windows, offsets and special tokens behave as for the pretrained models."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    trainer: trainers.WordPieceTrainer | trainers.UnigramTrainer
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
        tok.decoder = decoders.WordPiece()
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="[UNK]")
    else:
        raise XltError(f"tokenizer kind '{kind}': expected wordpiece or unigram")
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise XltError("cannot train a tokenizer: no text")
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=100_000,
        # transformers 5 defaults to input_ids + attention_mask; BERT-style pairs need segment ids
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
