"""The local engine on a tiny Llama + LoRA adapter: batched decoding gives what decoding alone gives."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from docmodel.storage import open_store
from docmodel_server.engine import Finished, Job, LocalEngine, SamplingParams, TextDelta
from docmodel_server.model_files import fetch_adapter

from testkit.server_factory import build_model_and_adapter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LocalEngine:
    root = tmp_path_factory.mktemp("engine")
    base, adapter_uri = build_model_and_adapter(root)
    assert open_store(adapter_uri).exists("adapter_config.json")
    adapter, _ = fetch_adapter(adapter_uri, root / "adapter")
    return LocalEngine.load(base, adapter, max_model_len=512)


Spec = tuple[list[int], SamplingParams]


def decode(
    engine: LocalEngine, specs: list[Spec], adapter: bool = True
) -> list[tuple[str, Finished]]:
    """Run `specs` as one batch, synchronously; (text, finish) per job."""
    texts: list[list[str]] = [[] for _ in specs]
    finished: list[Finished | None] = [None] * len(specs)

    def emitter(k: int) -> Callable[[object], None]:
        def emit(event: object) -> None:
            if isinstance(event, TextDelta):
                texts[k].append(event.text)
            elif isinstance(event, Finished):
                finished[k] = event

        return emit

    engine._generate(
        [Job(ids, params, adapter, emitter(k)) for k, (ids, params) in enumerate(specs)]
    )
    results = []
    for parts, done in zip(texts, finished, strict=True):
        assert done is not None
        results.append(("".join(parts), done))
    return results


def prompts(engine: LocalEngine, count: int) -> list[list[int]]:
    # Different lengths, so that the batch is left-padded.
    return [
        engine.chat_prompt([{"role": "user", "content": f"Question {i}: " + "why? " * (i % 5)}])
        for i in range(count)
    ]


@pytest.mark.parametrize("adapter", [True, False])
def test_a_batch_decodes_like_each_request_alone(engine: LocalEngine, adapter: bool) -> None:
    specs = [
        (ids, SamplingParams(max_tokens=6 + 5 * (i % 3), temperature=0))
        for i, ids in enumerate(prompts(engine, 10))
    ]
    alone = [decode(engine, [spec], adapter)[0] for spec in specs]
    together = decode(engine, specs, adapter)
    assert together == alone
    assert [done.completion_tokens for _, done in together] == [6, 11, 16, 6, 11, 16, 6, 11, 16, 6]


def test_seeded_sampling_and_stop_strings_inside_a_batch(engine: LocalEngine) -> None:
    ids = prompts(engine, 3)
    seeded = (ids[0], SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=5))
    alone = decode(engine, [seeded])[0]
    greedy_text = decode(engine, [(ids[1], SamplingParams(max_tokens=16, temperature=0))])[0][0]
    stop = greedy_text[5:7]
    stopped = (ids[1], SamplingParams(max_tokens=16, temperature=0, stop=(stop,)))
    together = decode(engine, [seeded, stopped, (ids[2], SamplingParams(4, temperature=0))])
    assert together[0] == alone
    assert together[1][0] == greedy_text[: greedy_text.index(stop)]
    assert together[1][1].finish_reason == "stop"
    assert together[2][1].completion_tokens == 4


def test_a_cancelled_row_stops_without_holding_up_the_others(engine: LocalEngine) -> None:
    ids = prompts(engine, 2)
    events: list[object] = []
    cancelled = Job(ids[0], SamplingParams(max_tokens=50, temperature=0), True, events.append)
    cancelled.cancelled.set()
    finished: list[object] = []
    other = Job(ids[1], SamplingParams(max_tokens=5, temperature=0), True, finished.append)
    engine._generate([cancelled, other])
    assert events == []
    assert isinstance(finished[-1], Finished) and finished[-1].completion_tokens == 5
