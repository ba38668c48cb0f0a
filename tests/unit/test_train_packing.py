"""The batches `train` feeds the model: packed, padding-free, no attention across examples,
loss on the answers only."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from docmodel.api import LoraSpec, TrainingSpec
from docmodel_trainer import sft
from docmodel_trainer.tinymodel import build_tiny_llama

PAIRS = [
    ("Which port does billing use?", "Port 8101."),
    ("How long are logs kept?", "Thirty days."),
    ("Who owns the search service?", "Bruno, from the platform team."),
    ("When do backups run?", "Nightly at two."),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", hidden_size=64)


def test_packed_forward_equals_separate_forwards(tiny: Path) -> None:
    """Position ids that restart per example keep examples from attending to each other.

    transformers builds the block-diagonal mask from the position ids only without a KV cache
    (as in training, where SFTTrainer passes use_cache=False), so the test does the same."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="sdpa").eval()
    a, b = torch.randint(10, 300, (1, 7)), torch.randint(10, 300, (1, 5))
    with torch.no_grad():
        alone = [model(input_ids=x, use_cache=False).logits for x in (a, b)]
        packed = model(
            input_ids=torch.cat([a, b], dim=1),
            position_ids=torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0),
            use_cache=False,
        ).logits
    torch.testing.assert_close(packed[:, :7], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[:, 7:], alone[1], atol=1e-5, rtol=1e-4)


def test_trainer_batches_are_packed_padding_free_and_answer_only(
    tiny: Path, tmp_path: Path
) -> None:
    from datasets import Dataset

    from docmodel_trainer import modeling

    tokenizer = modeling.load_tokenizer(str(tiny))
    model = modeling.load_model(str(tiny), quantize_4bit=False)
    dataset = Dataset.from_list(
        [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in PAIRS
        ]
    )
    cfg = sft.TrainConfig(
        base_model=str(tiny),
        training=TrainingSpec(
            method="lora",
            lora=LoraSpec(target_modules=["q_proj", "v_proj"]),
            max_seq_length=128,
            batch_size=2,
            gradient_accumulation_steps=1,
        ),
        max_steps=1,
    )
    trainer = sft.build_trainer(model, tokenizer, dataset, cfg, tmp_path, cuda=False)
    batch = next(iter(trainer.get_train_dataloader()))

    # One flattened row, no attention mask, positions restarting at every example.
    assert "attention_mask" not in batch
    ids, labels, positions = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    assert ids.shape == labels.shape == positions.shape
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) == len(PAIRS) and starts[0] == 0
    assert tokenizer.pad_token_id not in ids.tolist()

    # Loss only on the answers (and the end-of-turn token that teaches the model to stop).
    bounds = [*starts, len(ids)]
    for start, end in itertools.pairwise(bounds):
        text_ids, mask = ids[start:end].tolist(), (labels[start:end] != -100).tolist()
        trained = tokenizer.decode([t for t, m in zip(text_ids, mask, strict=True) if m])
        prompt = tokenizer.decode([t for t, m in zip(text_ids, mask, strict=True) if not m])
        assert any(trained.strip().startswith(a.split()[0]) for _, a in PAIRS)
        assert trained.endswith("<|eot_id|>")
        assert "<|start_header_id|>user" in prompt and "?" in prompt
        assert "?" not in trained


def test_token_counts() -> None:
    counts = sft.TokenCounts(positions=100, tokens=95, loss_tokens=38)
    assert counts.non_padding_fraction == 0.95
    assert counts.loss_token_fraction == 0.4
    assert sft.TokenCounts().non_padding_fraction == 0.0
