"""Facts about models that the trainer and the server image share, with no ML import: what a
LoRA adapter's own config says (rank, target modules, base), which LoRA ranks vLLM accepts,
which token ids end an answer, how many CPU threads a process may
use, and the one third-party warning both images silence while peft wraps a model.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The file that makes a directory a PEFT adapter, and peft's LoraConfig default for `r`.
ADAPTER_CONFIG = "adapter_config.json"
PEFT_DEFAULT_RANK = 8


@dataclass(frozen=True)
class AdapterFacts:
    """What an adapter's `adapter_config.json` says about it."""

    rank: int  # the largest LoRA rank: `r`, or a larger one from `rank_pattern`
    target_modules: tuple[str, ...]
    base_model: str | None  # `base_model_name_or_path`, as training saw it


def adapter_facts(adapter_dir: Path) -> AdapterFacts:
    """Read an adapter's facts from its own config, the one place they are decoded."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the adapter config {path}: {exc}") from None
    ranks = [
        int(config.get("r") or PEFT_DEFAULT_RANK),
        *(int(v) for v in (config.get("rank_pattern") or {}).values()),
    ]
    modules = config.get("target_modules") or ()
    return AdapterFacts(
        rank=max(ranks),
        target_modules=(modules,) if isinstance(modules, str) else tuple(sorted(modules)),
        base_model=config.get("base_model_name_or_path"),
    )


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


def lora_merged(model: Any) -> bool:
    """Whether a peft model's LoRA layers hold their update merged into the base weights."""
    return any(getattr(module, "merged", False) for module in model.modules())


def use_adapter(model: Any, adapter: str | None) -> contextlib.AbstractContextManager[None]:
    """Answer with `adapter` merged into the base weights, as served (vLLM and the local
    server pay nothing per token for a LoRA update either), or, with None, with the adapters
    off: peft then unmerges each layer as it runs it, exactly. Switching adapters unmerges the
    one merged first. Merging or unmerging is one pass over the adapted weights, done between
    batches; the answers are those of the unmerged model up to float rounding."""
    if adapter is None:
        return model.disable_adapter()  # type: ignore[no-any-return]
    if getattr(model, "active_adapter", adapter) != adapter:
        if lora_merged(model):
            model.unmerge_adapter()
        model.set_adapter(adapter)
    if not lora_merged(model):
        model.merge_adapter()
    return contextlib.nullcontext()


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (a
    container's CPU limit), at least 1. `os.cpu_count()` counts the machine's, which a pod or
    a `taskset` may not have: torch's thread pool sized to those only contends."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


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
