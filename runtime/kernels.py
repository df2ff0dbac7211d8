"""Hand-written Numba kernels that generated code calls: the counter-based random numbers, and the window
ops (convolution by im2col plus one GEMM per image, pooling by direct loops). Elementwise, reduction,
movement and matmul kernels are generated per model (compiler/codegen.py); these are the ones whose loops
do not depend on the model's structure.

Every kernel writes into arrays it is given and allocates nothing. Spatial ops are 2-d; the code
generator runs 1-d ones as 2-d with a height of 1. The semantics are those of the registry's NumPy
implementations (compiler/ops.py), which the backend tests compare against."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@njit(cache=True, error_model="numpy")
def mix(z):
    """splitmix64's finaliser, as runtime/interpreter.py's _mix (uint64 arithmetic wraps)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, error_model="numpy")
def uniform(key, i):
    """Element i of the uniform stream under key: 53 random bits in [0, 1), as counter_uniform."""
    z = key + np.uint64(i) * _GOLDEN
    return np.float64(mix(z) >> _S11) * (1.0 / 9007199254740992.0)


@njit(cache=True, error_model="numpy")
def node_key(prefix, node, stream):
    """The key of one random node's stream: the interpreter's chain (seed, step, path..., node, stream)."""
    return mix(mix(prefix ^ np.uint64(node)) ^ np.uint64(stream))


@njit(cache=True, error_model="numpy")
def normal(key0, key1, i):
    """Box-Muller on two uniform streams, in float64 as the reference."""
    u1 = uniform(key0, i)
    u2 = uniform(key1, i)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True, error_model="numpy")
def copy(dst, src, T, r):
    do, so, n = T[r], T[r + 1], T[r + 2]
    for i in range(n):
        dst[do + i] = src[so + i]


@njit(cache=True, error_model="numpy")
def fill(dst, T, r, value):
    do, n = T[r], T[r + 1]
    for i in range(n):
        dst[do + i] = value


# Each function reads its offsets and sizes from its row of the int table T, starting at r (see
# compiler/codegen.py: the step function would otherwise compile one argument expression per int).

# ---- scan: one step of a sequence [pre, steps, post] (flattened around the scanned axis) in and out
@njit(cache=True, error_model="numpy")
def scan_extract(dst, src, T, r, p):
    do, so, pre, steps, post = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4]
    for a in range(pre):
        for c in range(post):
            dst[do + a * post + c] = src[so + (a * steps + p) * post + c]


@njit(cache=True, error_model="numpy")
def scan_insert(dst, src, T, r, p):
    do, so, pre, steps, post = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4]
    for a in range(pre):
        for c in range(post):
            dst[do + (a * steps + p) * post + c] = src[so + a * post + c]


@njit(cache=True, error_model="numpy")
def _position(k, length, T, reverse):
    p = length - 1 - k if reverse else k
    return min(max(p, 0), T - 1)


@njit(cache=True, error_model="numpy")
def scan_extract_lengths(dst, src, lens, T, r, k):
    """With lengths, example b reads position k (or lengths[b] - 1 - k reversed), clipped into the sequence."""
    do, so, lo, pre, steps, post, batch, reverse = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4], T[r + 5], T[r + 6], T[r + 7]
    per = pre * post // batch
    for f in range(pre * post):
        a, c = f // post, f % post
        p = _position(k, lens[lo + f // per], steps, reverse)
        dst[do + f] = src[so + (a * steps + p) * post + c]


@njit(cache=True, error_model="numpy")
def scan_insert_lengths(dst, src, lens, T, r, k):
    """Only examples still running write their yield; the others keep the zeros they started with."""
    do, so, lo, pre, steps, post, batch, reverse = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4], T[r + 5], T[r + 6], T[r + 7]
    per = pre * post // batch
    for f in range(pre * post):
        length = lens[lo + f // per]
        if k >= length:
            continue
        a, c = f // post, f % post
        p = _position(k, length, steps, reverse)
        dst[do + (a * steps + p) * post + c] = src[so + f]


@njit(cache=True, error_model="numpy")
def scan_carry_lengths(dst, src, lens, T, r, k):
    do, so, lo, n, batch = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4]
    per = n // batch
    for f in range(n):
        if k < lens[lo + f // per]:
            dst[do + f] = src[so + f]


# ---- windows
@njit(cache=True, error_model="numpy")
def _fill_cols(x, n, c0, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    """im2col of one image: row (c, i, j) holds the input under kernel tap (i, j) of channel c at every
    output position. The in-bounds range of each row is computed, so the copy loop has no branch."""
    H, W = x.shape[2], x.shape[3]
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                shift = j * dw - pw
                lo = min(OW, max(0, -(shift // sw)))  # first ow with ow * sw + shift >= 0
                hi = max(lo, min(OW, (W - 1 - shift) // sw + 1))  # one past the last with it < W
                for oh in range(OH):
                    h = oh * sh - ph + i * dh
                    base = oh * OW
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            cols[r, base + ow] = 0
                        continue
                    for ow in range(lo):
                        cols[r, base + ow] = 0
                    for ow in range(lo, hi):
                        cols[r, base + ow] = x[n, c0 + c, h, ow * sw + shift]
                    for ow in range(hi, OW):
                        cols[r, base + ow] = 0


@njit(cache=True, error_model="numpy")
def conv2d(xa, wa, oa, wsa, T, r):
    """out [N, K, OH, OW] = x [N, C, H, W] correlated with w [K, C/groups, KH, KW]."""
    xo, wo, oo, wso = T[r], T[r + 1], T[r + 2], T[r + 3]
    N, C, H, W, K, cg, kh, kw = T[r + 4], T[r + 5], T[r + 6], T[r + 7], T[r + 8], T[r + 9], T[r + 10], T[r + 11]
    OH, OW = T[r + 14], T[r + 15]
    sh, sw, ph, pw, dh, dw, groups = T[r + 16], T[r + 17], T[r + 18], T[r + 19], T[r + 20], T[r + 21], T[r + 22]
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


@njit(cache=True, error_model="numpy")
def conv_transpose2d(xa, wa, oa, wsa, T, r):
    """out [N, K, OH, OW] = the adjoint of conv2d: x [N, C, H, W], w [C, K/groups, KH, KW]."""
    xo, wo, oo, wso = T[r], T[r + 1], T[r + 2], T[r + 3]
    N, C, H, W, kg, kh, kw = T[r + 4], T[r + 5], T[r + 6], T[r + 7], T[r + 9], T[r + 10], T[r + 11]
    K, OH, OW = T[r + 13], T[r + 14], T[r + 15]
    sh, sw, ph, pw, dh, dw, groups = T[r + 16], T[r + 17], T[r + 18], T[r + 19], T[r + 20], T[r + 21], T[r + 22]
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


@njit(cache=True, error_model="numpy")
def _pool_row(xa, oa, T, r):
    """A pool's row of T: offsets, the input's and the output's [N, C, H, W], then window, stride, pad."""
    xo, oo, N, C, H, W, OH, OW = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4], T[r + 5], T[r + 8], T[r + 9]
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    out = oa[oo:oo + N * C * OH * OW].reshape((N, C, OH, OW))
    return x, out, T[r + 10], T[r + 11], T[r + 12], T[r + 13], T[r + 14], T[r + 15]


@njit(cache=True, error_model="numpy")
def max_pool2d(xa, oa, T, r):
    x, out, kh, kw, sh, sw, ph, pw = _pool_row(xa, oa, T, r)
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
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


@njit(cache=True, error_model="numpy")
def avg_pool2d(xa, oa, T, r):
    """The mean over the window's part inside the padded input (count_include_pad, as the reference)."""
    x, out, kh, kw, sh, sw, ph, pw = _pool_row(xa, oa, T, r)
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
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


@njit(cache=True, error_model="numpy")
def max_pool_grad2d(xa, oa, ga, gxa, T, r):
    """Each window's cotangent goes to the first element (in scan order) equal to its maximum."""
    xo, oo, go, gxo = T[r], T[r + 1], T[r + 2], T[r + 3]
    N, C, H, W, OH, OW = T[r + 4], T[r + 5], T[r + 6], T[r + 7], T[r + 10], T[r + 11]
    kh, kw, sh, sw, ph, pw = T[r + 12], T[r + 13], T[r + 14], T[r + 15], T[r + 16], T[r + 17]
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


# ---- float32 exp, tanh and sigmoid that LLVM can vectorize (libm's are scalar calls, ~20 ns each, and
# dominate convolutional and recurrent steps). Cephes's single-precision algorithms: range reduction and
# a short polynomial, with a bit cast for 2^n; within 2 ulp of the exact value. Branches are selects.
@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


_F = np.float32


@njit(inline="always", error_model="numpy")
def exp32(x):
    xc = min(max(x, _F(-87.33654)), _F(88.72284))
    n = np.floor(xc * _F(1.442695040888963) + _F(0.5))
    r = xc - n * _F(0.693359375) + n * _F(2.12194440e-4)
    y = ((((_F(1.9875691500e-4) * r + _F(1.3981999507e-3)) * r + _F(8.3334519073e-3)) * r
          + _F(4.1665795894e-2)) * r + _F(1.6666665459e-1)) * r + _F(5.0000001201e-1)
    y = y * (r * r) + r + _F(1.0)
    v = y * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    v = _F(np.inf) if x > _F(88.72284) else v
    v = _F(0.0) if x < _F(-87.33654) else v
    return x if x != x else v


@njit(inline="always", error_model="numpy")
def tanh32(x):
    a = abs(x)
    z = x * x
    small = ((((_F(-5.70498872745e-3) * z + _F(2.06390887954e-2)) * z - _F(5.37397155531e-2)) * z
              + _F(1.33314422036e-1)) * z - _F(3.33332819422e-1)) * z * x + x
    large = _F(1.0) - _F(2.0) / (exp32(_F(2.0) * a) + _F(1.0))
    large = -large if x < _F(0.0) else large
    return small if a < _F(0.625) else large


@njit(inline="always", error_model="numpy")
def sigmoid32(x):
    return _F(1.0) / (_F(1.0) + exp32(-x))
