"""Aggregate generation throughput through the HTTP API: N concurrent
OpenAI-style chat completions (retrieval off, end-of-turn tokens banned so
each generates exactly max_tokens), with the official openai client.

    python bench/generate_http.py BASE_URL TOKEN MODEL MAX_TOKENS CONCURRENCY...
"""
import asyncio
import sys
import time

from openai import AsyncOpenAI

QUESTIONS = [
    "Explain what a hash chain is and why auditors like it.",
    "Describe how annual leave carry-over usually works in a company.",
    "What is the difference between BM25 and dense retrieval?",
    "List good practices for hand hygiene in a hospital ward.",
    "Why should a bank limit the size of a single FX ticket?",
    "Summarise what a liquidity coverage ratio measures.",
    "How should a nurse hand over a patient at the end of a shift?",
    "What does role-based access control mean?",
]


async def one(client, model, max_tokens, i):
    r = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        max_tokens=max_tokens,
        logit_bias={"151645": -100, "151643": -100},
        extra_body={"sovra": {"retrieval": False}},
    )
    return r.usage.completion_tokens


async def main() -> None:
    base, token, model, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = AsyncOpenAI(base_url=base + "/v1", api_key=token, max_retries=0, timeout=600)
    await one(client, model, 4, 0)
    for n in [int(x) for x in sys.argv[5:]]:
        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(one(client, model, max_tokens, i) for i in range(n)))
        wall = time.perf_counter() - t0
        print(f"http concurrency={n} requests={n} completion_tokens={sum(tokens)} wall_s={wall:.2f} tok_s={sum(tokens) / wall:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
