#!/usr/bin/env python3
"""The PyTorch side of desync's GPT parity test: loss and gradients of one batch.

    gpt_reference.py SPEC.json

An implementation of desync's GPT (src/desync/models/gpt.h) written here with torch.nn, layer
by layer, sharing no code with desync. SPEC gives the shape (n_layer, n_head, d_model, d_ff,
context, vocab, norm, position, activation, tie_embeddings), the state the test saved with
torch::pickle_save (a dict of desync's parameter names -> tensors, loaded strictly, so a name
or shape that differs fails here), the batch (ids and targets [B, T]), and where to write the
mean cross-entropy over the B*T tokens and the gradient of every parameter (a dict saved with
torch.save). When SPEC names desync's own results, the largest differences are printed.
"""

import json
import math
import sys

import torch
import torch.jit._pickle
from torch import nn


def load(path):
    """A torch::pickle_save archive (its typed containers carry a type tag that torch.load's
    weights-only unpickler accepts once allowed)."""
    with torch.serialization.safe_globals([torch.jit._pickle.restore_type_tag]):
        return torch.load(path)


class Norm(nn.Module):
    """LayerNorm with weight and bias, or RMSNorm with weight only; eps 1e-5."""

    def __init__(self, dim, rms):
        super().__init__()
        self.rms = rms
        self.weight = nn.Parameter(torch.ones(dim))
        if not rms:
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        if self.rms:
            return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * self.weight
        centred = x - x.mean(-1, keepdim=True)
        variance = (centred * centred).mean(-1, keepdim=True)
        return centred / torch.sqrt(variance + 1e-5) * self.weight + self.bias


def rotate(x, base=10000.0):
    """Rotary positions on x [B, H, T, D]: the pair (i, i + D/2) turns by t * base^(-2i/D)."""
    t, d = x.shape[-2], x.shape[-1]
    half = d // 2
    freq = base ** (-torch.arange(0, half, dtype=torch.float64) * 2.0 / d)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * freq[None, :]  # [T, half]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, d_model, n_head, rope):
        super().__init__()
        self.n_head, self.rope = n_head, rope
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, t, c = x.shape
        h, d = self.n_head, c // self.n_head
        q, k, v = self.qkv(x).reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        if self.rope:
            q, k = rotate(q), rotate(k)
        scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)
        allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        y = torch.einsum("bhij,bhjd->bhid", weights, v)
        return self.proj(y.permute(0, 2, 1, 3).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, d_model, d_ff, swiglu):
        super().__init__()
        self.swiglu = swiglu
        if swiglu:
            self.gate = nn.Linear(d_model, d_ff, bias=False)
            self.up = nn.Linear(d_model, d_ff, bias=False)
            self.proj = nn.Linear(d_ff, d_model, bias=False)
        else:
            self.fc = nn.Linear(d_model, d_ff)
            self.proj = nn.Linear(d_ff, d_model)

    def forward(self, x):
        if self.swiglu:
            g = self.gate(x)
            return self.proj(g * torch.sigmoid(g) * self.up(x))
        a = self.fc(x)
        return self.proj(0.5 * a * (1.0 + torch.erf(a / math.sqrt(2.0))))


class Block(nn.Module):
    def __init__(self, s):
        super().__init__()
        rms = s["norm"] == "rmsnorm"
        self.norm1 = Norm(s["d_model"], rms)
        self.attn = Attention(s["d_model"], s["n_head"], s["position"] == "rope")
        self.norm2 = Norm(s["d_model"], rms)
        self.mlp = Mlp(s["d_model"], s["d_ff"], s["activation"] == "swiglu")

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Embed(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.tok = nn.Embedding(s["vocab"], s["d_model"])
        if s["position"] == "learned":
            self.pos = nn.Embedding(s["context"], s["d_model"])

    def forward(self, ids):
        x = self.tok(ids)
        if hasattr(self, "pos"):
            x = x + self.pos(torch.arange(ids.shape[1]))[None]
        return x


class Head(nn.Module):
    def __init__(self, s, embed):
        super().__init__()
        self.norm = Norm(s["d_model"], s["norm"] == "rmsnorm")
        if s["tie_embeddings"]:
            self.tied = [embed.tok]  # a list keeps it out of this module's parameters
        else:
            self.out = nn.Linear(s["d_model"], s["vocab"], bias=False)

    def forward(self, x):
        weight = self.tied[0].weight if hasattr(self, "tied") else self.out.weight
        return self.norm(x) @ weight.t()


class Gpt(nn.Module):
    """Named as desync names its stages: <stage>.0.<layer>.<parameter>."""

    def __init__(self, s):
        super().__init__()
        embed = Embed(s)
        self.embed = nn.ModuleDict({"0": embed})
        for i in range(s["n_layer"]):
            setattr(self, f"block{i}", nn.ModuleDict({"0": Block(s)}))
        self.head = nn.ModuleDict({"0": Head(s, embed)})
        self.n_layer = s["n_layer"]

    def forward(self, ids):
        x = self.embed["0"](ids)
        for i in range(self.n_layer):
            x = getattr(self, f"block{i}")["0"](x)
        return self.head["0"](x)


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    torch.set_num_threads(1)
    model = Gpt(spec)
    model.load_state_dict(load(spec["state"]), strict=True)
    ids, targets = load(spec["batch"])
    logits = model(ids)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    grads = {name: p.grad.detach() for name, p in model.named_parameters()}
    torch.save({"loss": loss.detach(), "grads": grads}, spec["out"])

    if "desync" in spec:  # a report for whoever reads the test's output
        theirs = load(spec["desync"])
        loss_diff = abs(theirs["loss"].item() - loss.item())
        worst = max(
            ((theirs["grads"][n] - g).abs().max().item() / g.abs().max().item(), n)
            for n, g in grads.items())
        print(f"pytorch loss {loss.item():.8f}, |desync - pytorch| {loss_diff:.3g}; largest "
              f"gradient difference relative to the tensor's largest entry {worst[0]:.3g} "
              f"({worst[1]})")


if __name__ == "__main__":
    main()
