"""Python onnxruntime's embedding throughput on the same model, batch size
and thread count as Sovra's embedder; prints chunks/s on the last line.
Run by the ingest/search benchmark: python embed_reference.py BATCH THREADS N [MODEL]
(MODEL: all-minilm-l6-v2, the default, or multilingual-e5-small, whose
passages carry the `passage: ` prefix and whose graph takes no token types)."""
import os, sys, time
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

batch, threads, n = (int(a) for a in sys.argv[1:4])
model = sys.argv[4] if len(sys.argv) > 4 else "all-minilm-l6-v2"
e5 = model == "multilingual-e5-small"
models = os.environ.get("SOVRA_MODELS_DIR", os.path.expanduser("~/.cache/sovra/models"))
tok = Tokenizer.from_file(os.path.join(models, model, "tokenizer.json"))
tok.enable_padding()
tok.enable_truncation(512 if e5 else 256)
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(os.path.join(models, model, "model.onnx"), opts, providers=["CPUExecutionProvider"])
texts = [line for line in sys.stdin.read().split("\n\x1e\n") if line][:n]
if e5:
    texts = ["passage: " + t for t in texts]

def embed(chunk):
    enc = tok.encode_batch(chunk)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if not e5:
        feed["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
    h = sess.run(["last_hidden_state"], feed)[0]
    m = mask[..., None].astype(np.float32)
    v = (h * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)

embed(texts[:batch])  # warm-up
start = time.perf_counter()
for i in range(0, len(texts), batch):
    embed(texts[i:i + batch])
print(f"{len(texts) / (time.perf_counter() - start):.1f}")
