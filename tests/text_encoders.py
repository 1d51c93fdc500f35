"""Tiny randomly initialised T5 and CLIP text encoders written with ``save_pretrained``, as a user's folder
would hold a real one (nothing downloaded): a word-level tokenizer over a small vocabulary, and the model.

    python tests/text_encoders.py /tmp/tiny-t5 t5
"""

from __future__ import annotations

import sys
from pathlib import Path

WORDS = ("a red green blue ball square circle moves left right up down fast slow the on in cat dog "
         "jumps runs over under bright dark small large").split()


def _tokenizer(eos: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {w: i for i, w in enumerate(special + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # T5 ends a caption with </s>; CLIP wraps it in start and end tokens.
    template = "$A [EOS]" if eos else "[BOS] $A [EOS]"
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]"), len(vocab)


def write_tiny_encoder(folder: str | Path, kind: str, width: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    folder = Path(folder)
    tokenizer, vocab = _tokenizer(eos=kind == "t5")
    torch.manual_seed(seed)
    if kind == "t5":
        config = T5Config(vocab_size=vocab, d_model=width, d_kv=8, d_ff=2 * width, num_layers=2, num_heads=4,
                          pad_token_id=0, eos_token_id=3, decoder_start_token_id=0)
        model = T5EncoderModel(config)
    elif kind == "clip":
        config = CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                                eos_token_id=3)
        model = CLIPTextModel(config)
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    print(write_tiny_encoder(sys.argv[1], sys.argv[2]))
