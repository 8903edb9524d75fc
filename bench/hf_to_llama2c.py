#!/usr/bin/env python3
"""Writes a Hugging Face Llama checkpoint (f32 safetensors, one file) in llama2.c's legacy format
(7 int32 header, f32 weights) for run.c, with a placeholder tokenizer.bin, so that
bench/llama2c_compare.sh can time run.c on the very weights Swarm reads. The inverse of
`swarm convert-llama2c`: q_proj/k_proj rows are permuted back from Hugging Face's rotate-half
layout to llama2.c's interleaved pairs. Standard library only.

  hf_to_llama2c.py MODEL_DIR OUT.bin OUT_TOKENIZER.bin
"""
import json
import os
import struct
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_dir, out_bin, out_tok = sys.argv[1:]
    config = json.load(open(os.path.join(model_dir, "config.json")))
    path = os.path.join(model_dir, "model.safetensors")
    f = open(path, "rb")
    (header_len,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_len))
    base = 8 + header_len

    def tensor(name):
        if name not in header:
            sys.exit(f"{path}: no tensor {name}")
        meta = header[name]
        if meta["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {meta['dtype']}; run.c reads F32 only")
        begin, end = meta["data_offsets"]
        f.seek(base + begin)
        return f.read(end - begin), meta["shape"]

    dim = config["hidden_size"]
    hidden = config["intermediate_size"]
    layers = config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    vocab = config["vocab_size"]
    seq_len = config["max_position_embeddings"]
    head_dim = dim // heads
    if config.get("head_dim", head_dim) != head_dim:
        sys.exit("run.c needs head_dim == hidden_size / num_attention_heads")
    shared = "lm_head.weight" not in header or config.get("tie_word_embeddings", False)

    def unpermute(data, n_heads):
        # HF row h*hd + p*hd/2 + i  <-  llama2.c row h*hd + 2i + p.
        row = dim * 4
        rows = [data[r * row:(r + 1) * row] for r in range(n_heads * head_dim)]
        out = []
        for h in range(n_heads):
            for i in range(head_dim // 2):
                for p in range(2):
                    out.append(rows[h * head_dim + p * (head_dim // 2) + i])
        return b"".join(out)

    def layer(l, rest):
        return f"model.layers.{l}.{rest}"

    with open(out_bin, "wb") as o:
        o.write(struct.pack("<7i", dim, hidden, layers, heads, kv_heads,
                            vocab if shared else -vocab, seq_len))
        o.write(tensor("model.embed_tokens.weight")[0])
        for l in range(layers):
            o.write(tensor(layer(l, "input_layernorm.weight"))[0])
        for l in range(layers):
            o.write(unpermute(tensor(layer(l, "self_attn.q_proj.weight"))[0], heads))
        for l in range(layers):
            o.write(unpermute(tensor(layer(l, "self_attn.k_proj.weight"))[0], kv_heads))
        for name in ["self_attn.v_proj.weight", "self_attn.o_proj.weight",
                     "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                     "mlp.down_proj.weight", "mlp.up_proj.weight"]:
            for l in range(layers):
                o.write(tensor(layer(l, name))[0])
        o.write(tensor("model.norm.weight")[0])
        o.write(b"\0" * (seq_len * head_dim * 4))  # freq_cis_real and _imag (unused by run.c).
        if not shared:
            o.write(tensor("lm_head.weight")[0])

    # run.c's tokenizer: max_token_length, then per token: score, length, bytes.
    with open(out_tok, "wb") as o:
        pieces = [b"<unk>", b"<s>", b"</s>"] + [bytes([b]) for b in range(256)]
        pieces += [b"<t%d>" % i for i in range(len(pieces), vocab)]
        pieces = pieces[:vocab]
        o.write(struct.pack("<i", max(len(p) for p in pieces)))
        for p in pieces:
            o.write(struct.pack("<fi", 0.0, len(p)))
            o.write(p)


if __name__ == "__main__":
    main()
