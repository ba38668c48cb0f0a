"""Build a tiny Llama-architecture model with a tokenizer trained on the fly.

    docmodel-trainer tiny-model ./tiny-llama            # random weights, ~2 MB
    docmodel-trainer tiny-model ./tiny-llama --corpus docs/   # tokenizer fitted to your docs

Used by tests and benchmarks on a CPU: the same code paths as Llama 3.1 8B
(same architecture, chat template and special tokens), with no download. The tokenizer is a
byte-level BPE, so any text round-trips; the chat template follows Llama 3's header tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]

# Llama 3's template, trimmed of tool calling: a header per turn, <|eot_id|> after each.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}{% generation %}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{%- else %}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

SAMPLE_TEXT = [
    "DocModel turns internal documentation into a model that answers questions about it.",
    "The operator runs ingestion, training and evaluation Jobs, then serves the winner.",
    "Question: What is the default retention period? Answer: Thirty days.",
    "Configuration keys are case sensitive; the default port is 8000.",
]


def _corpus_lines(corpus: Path | None) -> Iterable[str]:
    yield from SAMPLE_TEXT
    if corpus is None:
        return
    paths = [corpus] if corpus.is_file() else sorted(corpus.rglob("*"))
    for path in paths:
        if path.is_file() and path.suffix.lower() in {".md", ".txt", ".html", ".htm", ".jsonl"}:
            yield from path.read_text(errors="replace").splitlines()


def build_tokenizer(corpus: Path | None = None, vocab_size: int = 1024):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer with Llama 3's special tokens and chat template."""
    return fit_tokenizer(_corpus_lines(corpus), vocab_size)


def fit_tokenizer(  # type: ignore[no-untyped-def]
    texts: Iterable[str], vocab_size: int, split_pattern: str | None = None
):
    """Byte-level BPE fitted to `texts`, with Llama 3's special tokens and chat template.
    With `split_pattern` (a regex), text is first split into the pattern's matches, so a BPE
    token never spans two of them."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if split_pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(
    out_dir: Path | str,
    *,
    corpus: Path | None = None,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 2048,
    initializer_range: float = 0.2,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Llama model and its tokenizer to `out_dir` (for tests: it
    cannot read; the demo uses a real small instruct model, `docmodel.basemodel`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        # Llama's 0.02 suits hidden sizes in the thousands; at 64 it leaves the frozen LM head
        # unable to express anything but a near-uniform distribution, so LoRA could not learn.
        initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "docmodel-tiny.json").write_text(
        json.dumps({"kind": "tiny-llama", "seed": seed, "vocab_size": len(tokenizer)}) + "\n"
    )
    log.info("Built tiny Llama path=%s params=%d", out, sum(p.numel() for p in model.parameters()))
    return out
