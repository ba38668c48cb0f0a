"""Teacher QA over an OpenAI-compatible API (served here by httpx.MockTransport)."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from docmodel.api import TeacherSpec
from docmodel_trainer.chunking import Passage
from docmodel_trainer.parsing import Block
from docmodel_trainer.qa.teacher import Teacher, TeacherError, parse_reply, prompt

SECRET = "sk-test-0123456789abcdef"
TEXT = "The default rollout timeout is 600 seconds. Rollbacks keep the last 10 releases."


def passage(i: int = 0) -> Passage:
    return Passage(
        f"doc{i}.md",
        ["Deploying", "Timeouts"],
        [Block(kind="paragraph", text=f"{TEXT} Ref {i}.")],
        "Deploying",
    )


def completion(content: str) -> httpx.Response:
    return httpx.Response(
        200, json={"choices": [{"message": {"role": "assistant", "content": content}}]}
    )


GOOD = json.dumps(
    {
        "pairs": [
            {"question": "What is the default rollout timeout?", "answer": "600 seconds"},
            {"question": "How many releases do rollbacks keep?", "answer": "the last 10 releases"},
        ]
    }
)


def teacher(handler, **spec) -> Teacher:
    spec = {"endpoint": "http://teacher.local/v1", "model": "judge-7b", **spec}
    return Teacher(
        TeacherSpec(**spec),
        api_key=SECRET,
        transport=httpx.MockTransport(handler),
        sleep=lambda s: None,
    )


def test_pairs_come_back_validated_and_the_request_is_openai_shaped():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return completion(GOOD)

    result = teacher(handler, questionsPerChunk=2).generate([passage()])
    assert result.pairs[passage().id] == [
        ("What is the default rollout timeout?", "600 seconds"),
        ("How many releases do rollbacks keep?", "the last 10 releases"),
    ]
    request = seen[0]
    assert request.url == "http://teacher.local/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = json.loads(request.content)
    assert body["model"] == "judge-7b"
    assert "600 seconds" in body["messages"][1]["content"]


def test_prompt_asks_for_specific_checkable_json():
    text = prompt(passage(), 3)
    assert (
        "3 question/answer pairs" in text and '"pairs"' in text and "Deploying > Timeouts" in text
    )


@pytest.mark.parametrize(
    "reply",
    [
        "Sure! Here are some questions.",
        '{"pairs": "none"}',
        '{"pairs": [{"question": "Is it good", "answer": "yes"}]}',  # not a question mark
        '{"pairs": [{"question": "What is the capital of France?", "answer": "Paris"}]}',  # ungrounded
        '[{"q": "x"}]',
    ],
)
def test_garbage_replies_give_no_pairs(reply):
    assert parse_reply(reply, TEXT) == []


def test_fenced_json_with_chatter_is_accepted():
    reply = "Here you go:\n```json\n" + GOOD + "\n```"
    assert len(parse_reply(reply, TEXT)) == 2


def test_garbage_then_good_is_retried_with_backoff():
    replies = iter([completion("no json here"), httpx.Response(503), completion(GOOD)])
    sleeps = []
    t = teacher(lambda r: next(replies))
    t.sleep = sleeps.append
    result = t.generate([passage()])
    assert len(result.pairs[passage().id]) == 2
    assert result.requests == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


def test_a_passage_that_keeps_failing_is_skipped_and_counted():
    def handler(request: httpx.Request) -> httpx.Response:
        if b"Ref 0." in request.content:
            raise httpx.ReadTimeout("slow", request=request)
        return completion(GOOD)

    result = teacher(handler).generate([passage(0), passage(1), passage(2)])
    assert [cid for cid, _ in result.failed] == [passage(0).id]
    assert "timed out" in result.failed[0][1] and "4 attempts" in result.failed[0][1]
    assert set(result.pairs) == {passage(1).id, passage(2).id}


def test_most_passages_failing_is_an_error_naming_the_endpoint():
    with pytest.raises(
        TeacherError, match=r"teacher judge-7b at http://teacher.local/v1 failed on 3 of 3"
    ):
        teacher(lambda r: completion("garbage")).generate([passage(i) for i in range(3)])


def test_a_refused_key_stops_at_once_and_is_never_shown(caplog):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(401, text=f"bad key {SECRET}")

    caplog.set_level(logging.DEBUG)
    with pytest.raises(TeacherError, match="refused the API key") as info:
        teacher(handler).generate([passage(i) for i in range(5)])
    assert SECRET not in str(info.value) and SECRET not in caplog.text
    assert len(calls) <= 5  # no retries of an auth failure


def test_concurrency_is_bounded_by_max_concurrency():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def handler(request):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return completion(GOOD)

    result = teacher(handler, maxConcurrency=3).generate([passage(i) for i in range(12)])
    assert len(result.pairs) == 12
    assert state["peak"] == 3


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DOCMODEL_TEACHER_API_KEY", "env-key")
    seen = []
    t = Teacher(
        TeacherSpec(endpoint="http://t.local/v1", model="m"),
        transport=httpx.MockTransport(lambda r: seen.append(r) or completion(GOOD)),
    )
    t.generate([passage()])
    assert seen[0].headers["authorization"] == "Bearer env-key"
