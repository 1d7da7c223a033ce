"""OpenAI's Files and Batch API through Tollgate with the official `openai` Python SDK.

The mock provider completes a batch when it is first retrieved; its output file has one
chat completion per input line, `custom_id` echoed, with the mock's token counts
(prompt = 1 + bytes of the messages // 4, completion = max_tokens).
"""

import json

import openai
import pytest


def request_line(custom_id: str, content: str, max_tokens: int) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_a_batch_runs_through_the_sdk(openai_client):
    lines = [request_line("first", "batched hello", 2), request_line("second", "another one", 4)]
    uploaded = openai_client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    assert uploaded.id and uploaded.purpose == "batch"
    assert openai_client.files.retrieve(uploaded.id).id == uploaded.id

    batch = openai_client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "sdk"},
    )
    assert batch.status == "in_progress"
    assert batch.metadata == {"job": "sdk"}
    # Tollgate's ids, which name the provider's file and batch: the input file is the one uploaded.
    assert batch.input_file_id == uploaded.id
    assert uploaded.id.startswith("file-") and batch.id.startswith("batch_")

    done = openai_client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts.completed == 2
    output = openai_client.files.content(done.output_file_id).text
    answers = {a["custom_id"]: a["response"]["body"] for a in map(json.loads, output.splitlines())}
    assert answers["first"]["usage"]["prompt_tokens"] == 1 + len("batched hello") // 4
    assert answers["second"]["usage"]["completion_tokens"] == 4

    listed = [b.id for b in openai_client.batches.list(limit=10).data]
    assert batch.id in listed


def test_a_file_that_is_not_a_batch_is_refused(openai_client):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.files.create(file=("in.jsonl", b"not json at all\n"), purpose="batch")
    assert "line 1" in refused.value.message


def test_an_unknown_batch_is_not_found(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.batches.retrieve("batch_nobody_has")


def test_a_forged_file_id_is_not_found(openai_client):
    uploaded = openai_client.files.create(file=("in.jsonl", request_line("only", "hi", 1).encode()), purpose="batch")
    last = "B" if uploaded.id[-2] == "A" else "A"
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(uploaded.id[:-2] + last + uploaded.id[-1])


def test_a_file_is_deleted_through_the_sdk(openai_client):
    uploaded = openai_client.files.create(file=("in.jsonl", request_line("gone", "hi", 1).encode()), purpose="batch")
    deleted = openai_client.files.delete(uploaded.id)
    assert deleted.id == uploaded.id and deleted.deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(uploaded.id)
