"""Initial values of parameters, by the initializer named in the `.dln` file (compiler.schema lists them).

Each parameter draws from its own generator, seeded by (seed, its scoped name): adding a layer does not
change the initial weights of the others."""
from __future__ import annotations

import zlib

import numpy as np

from compiler.graph import Graph

_NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}


def fans(shape) -> tuple[int, int]:
    """Fan-in and fan-out: [in, out] for matrices (our dense layout), [out, in, *kernel] for convolutions."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def initial_value(name: str, shape: tuple, init: str, args: dict, seed: int, dtype="f32") -> np.ndarray:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])
    fan_in, fan_out = fans(shape)
    fan_in = args.get("fan_in") or fan_in
    fan_out = args.get("fan_out") or fan_out
    gain = args.get("gain", 1.0)
    if init == "zeros":
        v = np.zeros(shape)
    elif init == "ones":
        v = np.ones(shape)
    elif init == "constant":
        v = np.full(shape, args["value"])
    elif init == "normal":
        v = rng.normal(args.get("mean", 0.0), args.get("std", 1.0), shape)
    elif init == "truncated_normal":
        mean, std = args.get("mean", 0.0), args.get("std", 1.0)
        v = rng.normal(0.0, 1.0, shape)
        while np.any(bad := np.abs(v) > 2):  # redraw beyond two standard deviations
            v[bad] = rng.normal(0.0, 1.0, int(bad.sum()))
        v = mean + std * v
    elif init == "uniform":
        v = rng.uniform(args.get("low", -0.05), args.get("high", 0.05), shape)
    elif init in ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal"):
        family, dist = init.split("_")
        # Variance: Glorot 2/(in+out), He 2/in, LeCun 1/in (Glorot & Bengio 2010; He et al. 2015; LeCun 1998).
        var = {"glorot": 2.0 / (fan_in + fan_out), "he": 2.0 / fan_in, "lecun": 1.0 / fan_in}[family] * gain ** 2
        if dist == "uniform":
            limit = np.sqrt(3.0 * var)
            v = rng.uniform(-limit, limit, shape)
        else:
            v = rng.normal(0.0, np.sqrt(var), shape)
    elif init == "orthogonal":
        rows = shape[0] if len(shape) > 1 else 1
        cols = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        a = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))  # a uniform distribution over orthogonal matrices (Mezzadri 2007)
        v = gain * (q if rows >= cols else q.T).reshape(shape)
    else:
        raise ValueError(f"unknown initializer {init!r}")
    return np.asarray(v, dtype=_NP[dtype])


def init_params(g: Graph, seed: int = 0, bindings: dict | None = None) -> dict[str, np.ndarray]:
    from .interpreter import Ctx
    ctx = Ctx(bindings or {name: v for name, (v, _) in g.dims.items() if v.is_const})
    out = {}
    for name, n in g.params.items():
        d = g.node(n)
        shape = tuple(ctx.dim(x) for x in d["type"].shape)
        a = d["attrs"]
        out[name] = initial_value(name, shape, a["init"], a["init_args"], seed, d["type"].dtype)
    return out
