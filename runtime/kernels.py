"""Hand-written Numba kernels that generated code calls: the counter-based random numbers, and the window
ops (convolution by im2col plus one GEMM per image, pooling by direct loops). Elementwise, reduction,
movement and matmul kernels are generated per model (compiler/codegen.py); these are the ones whose loops
do not depend on the model's structure.

Every kernel writes into arrays it is given and allocates nothing. Spatial ops are 2-d; the code
generator runs 1-d ones as 2-d with a height of 1. The semantics are those of the registry's NumPy
implementations (compiler/ops.py), which the backend tests compare against."""
from __future__ import annotations

import numpy as np
from numba import njit

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@njit(cache=True)
def mix(z):
    """splitmix64's finaliser, as runtime/interpreter.py's _mix (uint64 arithmetic wraps)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True)
def uniform(key, i):
    """Element i of the uniform stream under key: 53 random bits in [0, 1), as counter_uniform."""
    z = key + np.uint64(i) * _GOLDEN
    return np.float64(mix(z) >> _S11) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def node_key(prefix, node, stream):
    """The key of one random node's stream: the interpreter's chain (seed, step, path..., node, stream)."""
    return mix(mix(prefix ^ np.uint64(node)) ^ np.uint64(stream))


@njit(cache=True)
def normal(key0, key1, i):
    """Box-Muller on two uniform streams, in float64 as the reference."""
    u1 = uniform(key0, i)
    u2 = uniform(key1, i)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True)
def copy(dst, do, src, so, n):
    for i in range(n):
        dst[do + i] = src[so + i]


@njit(cache=True)
def fill(dst, do, n, value):
    for i in range(n):
        dst[do + i] = value


# ---- scan: one step of a sequence [pre, T, post] (flattened around the scanned axis) in and out
@njit(cache=True)
def scan_extract(dst, do, src, so, pre, T, post, p):
    for a in range(pre):
        for c in range(post):
            dst[do + a * post + c] = src[so + (a * T + p) * post + c]


@njit(cache=True)
def scan_insert(dst, do, src, so, pre, T, post, p):
    for a in range(pre):
        for c in range(post):
            dst[do + (a * T + p) * post + c] = src[so + a * post + c]


@njit(cache=True)
def _position(k, length, T, reverse):
    p = length - 1 - k if reverse else k
    return min(max(p, 0), T - 1)


@njit(cache=True)
def scan_extract_lengths(dst, do, src, so, pre, T, post, k, lens, lo, batch, reverse):
    """With lengths, example b reads position k (or lengths[b] - 1 - k reversed), clipped into the sequence."""
    per = pre * post // batch
    for f in range(pre * post):
        a, c = f // post, f % post
        p = _position(k, lens[lo + f // per], T, reverse)
        dst[do + f] = src[so + (a * T + p) * post + c]


@njit(cache=True)
def scan_insert_lengths(dst, do, src, so, pre, T, post, k, lens, lo, batch, reverse):
    """Only examples still running write their yield; the others keep the zeros they started with."""
    per = pre * post // batch
    for f in range(pre * post):
        length = lens[lo + f // per]
        if k >= length:
            continue
        a, c = f // post, f % post
        p = _position(k, length, T, reverse)
        dst[do + (a * T + p) * post + c] = src[so + f]


@njit(cache=True)
def scan_carry_lengths(dst, do, src, so, n, k, lens, lo, batch):
    per = n // batch
    for f in range(n):
        if k < lens[lo + f // per]:
            dst[do + f] = src[so + f]


# ---- windows
@njit(cache=True)
def _fill_cols(x, n, c0, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    H, W = x.shape[2], x.shape[3]
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for oh in range(OH):
                    h = oh * sh - ph + i * dh
                    base = oh * OW
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            cols[r, base + ow] = 0
                        continue
                    for ow in range(OW):
                        v = ow * sw - pw + j * dw
                        if 0 <= v < W:
                            cols[r, base + ow] = x[n, c0 + c, h, v]
                        else:
                            cols[r, base + ow] = 0


@njit(cache=True)
def conv2d(xa, xo, wa, wo, oa, oo, N, C, H, W, K, cg, kh, kw, N_, K_, OH, OW, sh, sw, ph, pw, dh, dw, groups,
           wsa, wso):
    """out [N, K, OH, OW] = x [N, C, H, W] correlated with w [K, C/groups, KH, KW]."""
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    w = wa[wo:wo + K * cg * kh * kw].reshape((K, cg, kh, kw))
    out = oa[oo:oo + N * K * OH * OW].reshape((N, K, OH, OW))
    ws = wsa[wso:wso + cg * kh * kw * OH * OW]
    kg = K // groups
    rows = cg * kh * kw
    cols = ws[:rows * OH * OW].reshape((rows, OH * OW))
    w2 = w.reshape((K, rows))
    for n in range(N):
        o = out[n].reshape((K, OH * OW))
        for g in range(groups):
            _fill_cols(x, n, g * cg, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, cols)
            if groups == 1:
                np.dot(w2, cols, o)
            else:
                np.dot(w2[g * kg:(g + 1) * kg], cols, o[g * kg:(g + 1) * kg])


@njit(cache=True)
def conv_transpose2d(xa, xo, wa, wo, oa, oo, N, C, H, W, C_, kg, kh, kw, N_, K, OH, OW, sh, sw, ph, pw, dh, dw,
                     groups, wsa, wso):
    """out [N, K, OH, OW] = the adjoint of conv2d: x [N, C, H, W], w [C, K/groups, KH, KW]."""
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    w = wa[wo:wo + C * kg * kh * kw].reshape((C, kg, kh, kw))
    out = oa[oo:oo + N * K * OH * OW].reshape((N, K, OH, OW))
    ws = wsa[wso:wso + kg * kh * kw * H * W]
    cg = C // groups
    rows = kg * kh * kw
    cols = ws[:rows * H * W].reshape((rows, H * W))
    w2 = w.reshape((C, rows))
    out[:] = 0
    for n in range(N):
        xn = x[n].reshape((C, H * W))
        for g in range(groups):
            if groups == 1:
                np.dot(w2.T, xn, cols)
            else:
                np.dot(w2[g * cg:(g + 1) * cg].T, xn[g * cg:(g + 1) * cg], cols)
            for k in range(kg):
                for i in range(kh):
                    for j in range(kw):
                        r = (k * kh + i) * kw + j
                        for h in range(H):
                            oh = h * sh - ph + i * dh
                            if oh < 0 or oh >= OH:
                                continue
                            for v in range(W):
                                ow = v * sw - pw + j * dw
                                if 0 <= ow < OW:
                                    out[n, g * kg + k, oh, ow] += cols[r, h * W + v]


@njit(cache=True)
def max_pool2d(xa, xo, oa, oo, N, C, H, W, N_, C_, OH, OW, kh, kw, sh, sw, ph, pw):
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    out = oa[oo:oo + N * C * OH * OW].reshape((N, C, OH, OW))
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    m = -np.inf
                    for i in range(kh):
                        h = oh * sh - ph + i
                        if 0 <= h < H:
                            for j in range(kw):
                                v = ow * sw - pw + j
                                if 0 <= v < W:
                                    m = np.maximum(m, x[n, c, h, v])
                    out[n, c, oh, ow] = m


@njit(cache=True)
def avg_pool2d(xa, xo, oa, oo, N, C, H, W, N_, C_, OH, OW, kh, kw, sh, sw, ph, pw):
    """The mean over the window's part inside the padded input (count_include_pad, as the reference)."""
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    out = oa[oo:oo + N * C * OH * OW].reshape((N, C, OH, OW))
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    total = 0.0
                    inside = 0
                    for i in range(kh):
                        h = oh * sh - ph + i
                        if h >= H + ph:
                            continue
                        for j in range(kw):
                            v = ow * sw - pw + j
                            if v >= W + pw:
                                continue
                            inside += 1
                            if 0 <= h < H and 0 <= v < W:
                                total += x[n, c, h, v]
                    out[n, c, oh, ow] = total / inside


@njit(cache=True)
def max_pool_grad2d(xa, xo, oa, oo, ga, go, gxa, gxo, N, C, H, W, N_, C_, OH, OW, kh, kw, sh, sw, ph, pw):
    """Each window's cotangent goes to the first element (in scan order) equal to its maximum."""
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    out = oa[oo:oo + N * C * OH * OW].reshape((N, C, OH, OW))
    g = ga[go:go + N * C * OH * OW].reshape((N, C, OH, OW))
    gx = gxa[gxo:gxo + N * C * H * W].reshape((N, C, H, W))
    gx[:] = 0
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    m = out[n, c, oh, ow]
                    done = False
                    for i in range(kh):
                        h = oh * sh - ph + i
                        for j in range(kw):
                            v = ow * sw - pw + j
                            if 0 <= h < H and 0 <= v < W and x[n, c, h, v] == m:
                                gx[n, c, h, v] += g[n, c, oh, ow]
                                done = True
                                break
                        if done:
                            break
