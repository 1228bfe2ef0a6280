"""The official `openai` Python client against a running Sovra gateway:
models, chat completions (plain and streamed, with Sovra's extension field),
embeddings, and an error. Run by tests/integration/answers.rs:

    python tests/openai/check_client.py BASE_URL TOKEN MODEL
"""
import sys

import openai
from openai import OpenAI


def main() -> None:
    base, token, model = sys.argv[1:4]
    client = OpenAI(base_url=base + "/v1", api_key=token, max_retries=0)

    ids = [m.id for m in client.models.list().data]
    assert model in ids, ids

    messages = [{"role": "user", "content": "how many days of annual leave"}]
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, extra_body={"sovra": {"mode": "hybrid"}}
    )
    assert r.object == "chat.completion", r
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    sovra = r.model_extra["sovra"]
    assert sovra["sources"][0]["document_id"] == "leave", sovra
    assert isinstance(sovra["citations"], list)

    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish, extension = "", None, None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
            extension = (chunk.model_extra or {}).get("sovra") or extension
        if chunk.usage:
            usage = chunk.usage
    assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
    assert finish == r.choices[0].finish_reason
    assert usage.completion_tokens == r.usage.completion_tokens
    assert extension["sources"][0]["document_id"] == "leave"

    plain = client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, extra_body={"sovra": {"retrieval": False}}
    )
    assert plain.model_extra["sovra"]["sources"] == []

    e = client.embeddings.create(model="multilingual-e5-small", input=["annual leave"])
    assert len(e.data[0].embedding) == 384

    try:
        client.chat.completions.create(model="gpt-4o", messages=messages)
        raise AssertionError("an unknown model must be refused")
    except openai.NotFoundError as err:
        assert err.body["field"] == "model", err.body
    print("openai client: ok")


if __name__ == "__main__":
    main()
