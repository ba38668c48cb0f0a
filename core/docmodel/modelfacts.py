"""Facts about models that the trainer and the server image share, with no ML import: which
LoRA ranks vLLM accepts, which token ids end an answer, and the one third-party warning both
images silence while peft wraps a model.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

# vLLM's LoRAConfig.max_lora_rank accepts only these values (vllm/config/lora.py MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """The ids that end an answer: the generation config's `eos_token_id` (an id or a list:
    Llama 3.1 Instruct lists `<|end_of_text|>`, `<|eom_id|>` and `<|eot_id|>`), then the
    tokenizer's own end-of-sequence id; each once, in that order."""
    ids: list[int] = []
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, int) and item not in ids:
                ids.append(item)
    return ids


@contextlib.contextmanager
def peft_compat() -> Iterator[None]:
    """Wrap peft model construction: peft 0.21 reads `model.is_gradient_checkpointing`, which
    transformers 5 deprecates (FutureWarning) in favour of `is_activation_checkpointing`.
    Nothing on our side to change, so that one warning is ignored here and only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*is_gradient_checkpointing.* is deprecated",
            category=FutureWarning,
        )
        yield
