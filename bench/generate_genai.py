"""ONNX Runtime's own generation loop (onnxruntime-genai) on the same model
and prompt as Sovra's bench: time to first token and decode tokens/s,
greedy, a fixed number of new tokens (min_length forces all of them).

    python bench/generate_genai.py MODEL_DIR PROMPT_FILE NEW_TOKENS RUNS
"""
import sys
import time

import onnxruntime_genai as og


def main() -> None:
    model_dir, prompt_file, new_tokens, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    model = og.Model(model_dir)
    tok = og.Tokenizer(model)
    ids = tok.encode(open(prompt_file, encoding="utf-8").read())

    def once(n):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        t0 = time.perf_counter()
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        gen.generate_next_token()
        ttft = time.perf_counter() - t0
        count = 1
        while not gen.is_done():
            gen.generate_next_token()
            count += 1
        total = time.perf_counter() - t0
        return ttft, count, total

    once(4)
    for _ in range(runs):
        ttft, count, total = once(new_tokens)
        print(f"genai prompt_tokens={len(ids)} new_tokens={count} ttft_ms={ttft * 1e3:.1f} decode_tok_s={(count - 1) / (total - ttft):.2f}")


if __name__ == "__main__":
    main()
