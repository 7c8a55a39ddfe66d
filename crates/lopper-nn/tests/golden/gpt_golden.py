#!/usr/bin/env python3
"""Independent float64 numpy implementation of lopper-nn's GPT forward and backward.

Reads weights.safetensors (written by `cargo test -p lopper-nn --test golden -- --ignored
write_golden_weights`), computes the mean cross-entropy and every parameter gradient in float64, and
writes expected.safetensors (float32: `loss` and `grad.<parameter name>`) next to it.

Model (GPT-2, pre-LN, tied LM head): x = wte[tok] + wpe[pos]; per block:
  x = x + proj(attn(qkv(ln_1(x))));  x = x + mlp.proj(gelu_tanh(mlp.fc(ln_2(x))));
logits = ln_f(x) wte^T. Linear weights are (out, in): y = x W^T + b. LayerNorm eps 1e-5.
"""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = buf[8 + n :]
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", h
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").astype(np.float64).reshape(h["shape"])
    return out, meta


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def ln_fwd(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + 1e-5)
    norm = (x - mean) * rstd
    return norm * w + b, (norm, rstd)


def ln_bwd(dout, cache, w):
    norm, rstd = cache
    dnorm = dout * w
    dx = rstd * (dnorm - dnorm.mean(-1, keepdims=True) - norm * (dnorm * norm).mean(-1, keepdims=True))
    return dx, (dout * norm).sum(0), dout.sum(0)


C0 = np.sqrt(2.0 / np.pi)


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(C0 * (x + 0.044715 * x**3)))


def gelu_grad(x):
    t = np.tanh(C0 * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C0 * (1.0 + 3 * 0.044715 * x * x)


def main():
    p, meta = read_safetensors(os.path.join(HERE, "weights.safetensors"))
    V, ctx, L, H, C, B, T = map(int, meta["config"].split(","))
    tok = np.array([int(t) for t in meta["tokens"].split(",")])
    tgt = np.array([int(t) for t in meta["targets"].split(",")])
    N, hs = B * T, C // H
    W = lambda name, *shape: p[name].reshape(shape)  # noqa: E731
    wte, wpe = W("wte.weight", V, C), W("wpe.weight", ctx, C)
    pos = np.tile(np.arange(T), B)
    g = {k: np.zeros_like(v) for k, v in p.items()}

    # forward
    x = wte[tok] + wpe[pos]
    caches = []
    for l in range(L):
        pre = f"h.{l}."
        c = {"x": x}
        ln1, c["ln1"] = ln_fwd(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        c["ln1_out"] = ln1
        qkv = ln1 @ W(pre + "attn.qkv.weight", 3 * C, C).T + p[pre + "attn.qkv.bias"]
        q, k, v = (qkv[:, i * C : (i + 1) * C].reshape(B, T, H, hs).transpose(0, 2, 1, 3) for i in range(3))
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        mask = np.tril(np.ones((T, T), dtype=bool))
        att = np.where(mask, att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(N, C)
        c.update(q=q, k=k, v=v, att=att, y=y)
        x2 = x + y @ W(pre + "attn.proj.weight", C, C).T + p[pre + "attn.proj.bias"]
        ln2, c["ln2"] = ln_fwd(x2, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        fch = ln2 @ W(pre + "mlp.fc.weight", 4 * C, C).T + p[pre + "mlp.fc.bias"]
        gl = gelu(fch)
        c.update(x2=x2, ln2_out=ln2, fch=fch, gl=gl)
        x = x2 + gl @ W(pre + "mlp.proj.weight", C, 4 * C).T + p[pre + "mlp.proj.bias"]
        caches.append(c)
    lnf, lnf_c = ln_fwd(x, p["ln_f.weight"], p["ln_f.bias"])
    logits = lnf @ wte.T
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    loss = -np.log(probs[np.arange(N), tgt]).mean()

    # backward
    dlogits = probs.copy()
    dlogits[np.arange(N), tgt] -= 1.0
    dlogits /= N
    g["wte.weight"] += (dlogits.T @ lnf).reshape(-1)
    dlnf = dlogits @ wte
    dx, dw, db = ln_bwd(dlnf, lnf_c, p["ln_f.weight"])
    g["ln_f.weight"] += dw
    g["ln_f.bias"] += db

    def lin_bwd(name, inp, dout, w_shape):
        w = W(name + ".weight", *w_shape)
        g[name + ".weight"] += (dout.T @ inp).reshape(-1)
        g[name + ".bias"] += dout.sum(0)
        return dout @ w

    for l in reversed(range(L)):
        pre, c = f"h.{l}.", caches[l]
        dgl = lin_bwd(pre + "mlp.proj", c["gl"], dx, (C, 4 * C))
        dfch = dgl * gelu_grad(c["fch"])
        dln2 = lin_bwd(pre + "mlp.fc", c["ln2_out"], dfch, (4 * C, C))
        d, dw, db = ln_bwd(dln2, c["ln2"], p[pre + "ln_2.weight"])
        g[pre + "ln_2.weight"] += dw
        g[pre + "ln_2.bias"] += db
        dx = dx + d
        dy = lin_bwd(pre + "attn.proj", c["y"], dx, (C, C))
        dy = dy.reshape(B, T, H, hs).transpose(0, 2, 1, 3)
        att, q, k, v = c["att"], c["q"], c["k"], c["v"]
        datt = dy @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dy
        dpre = att * (datt - (att * datt).sum(-1, keepdims=True)) / np.sqrt(hs)
        dq = dpre @ k
        dk = dpre.transpose(0, 1, 3, 2) @ q
        dqkv = np.concatenate([t.transpose(0, 2, 1, 3).reshape(N, C) for t in (dq, dk, dv)], axis=1)
        dln1 = lin_bwd(pre + "attn.qkv", c["ln1_out"], dqkv, (3 * C, C))
        d, dw, db = ln_bwd(dln1, c["ln1"], p[pre + "ln_1.weight"])
        g[pre + "ln_1.weight"] += dw
        g[pre + "ln_1.bias"] += db
        dx = dx + d
    np.add.at(g["wte.weight"].reshape(V, C), tok, dx)
    np.add.at(g["wpe.weight"].reshape(ctx, C), pos, dx)

    out = {"loss": np.array([loss])}
    out.update({"grad." + k: v.reshape(-1) for k, v in g.items()})
    write_safetensors(os.path.join(HERE, "expected.safetensors"), out)
    print(f"loss {loss:.10f}; wrote {len(g)} gradients")


if __name__ == "__main__":
    main()
