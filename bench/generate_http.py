"""Aggregate generation throughput through the HTTP API: N concurrent
streamed OpenAI-style chat completions (retrieval off, end-of-turn tokens
banned so each generates exactly max_tokens), with the official openai
client; each request's time to its first content chunk.

    python bench/generate_http.py BASE_URL TOKEN MODEL MAX_TOKENS CONCURRENCY...
"""
import asyncio
import os
import statistics
import sys
import time

from openai import AsyncOpenAI

# The same questions as the in-process bench (services/inference/benches/generate.rs).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "generate_questions.txt"), encoding="utf-8") as f:
    QUESTIONS = [line.strip() for line in f if line.strip()]


async def one(client, model, max_tokens, i):
    """(completion tokens, ms to the first content chunk)"""
    t0 = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        max_tokens=max_tokens,
        logit_bias={"151645": -100, "151643": -100},
        extra_body={"sovra": {"retrieval": False}},
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - t0) * 1e3
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens, first if first is not None else float("nan")


async def main() -> None:
    base, token, model, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = AsyncOpenAI(base_url=base + "/v1", api_key=token, max_retries=0, timeout=600)
    await one(client, model, 4, 0)
    for n in [int(x) for x in sys.argv[5:]]:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, model, max_tokens, i) for i in range(n)))
        wall = time.perf_counter() - t0
        tokens = sum(r[0] for r in results)
        ttft = statistics.median(r[1] for r in results)
        print(f"http concurrency={n} requests={n} completion_tokens={tokens} wall_s={wall:.2f} tok_s={tokens / wall:.2f} median_ttft_ms={ttft:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
