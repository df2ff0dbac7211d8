"""Hand-written Numba kernels that generated code calls: the counter-based random numbers, and the window
ops (convolution by im2col plus one GEMM per chunk of images, pooling by direct loops). Elementwise, reduction,
movement and matmul kernels are generated per model (compiler/codegen.py); these are the ones whose loops
do not depend on the model's structure.

Every kernel writes into arrays it is given and allocates nothing. Spatial ops are 2-d; the code
generator runs 1-d ones as 2-d with a height of 1. The semantics are those of the registry's NumPy
implementations (compiler/ops.py), which the backend tests compare against."""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
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


# Runs of a flat array, indexed unsigned: numba checks signed indices for negative wraparound, and that
# check keeps LLVM from vectorizing the loop.
@njit(cache=True, error_model="numpy")
def _zero_run(dst, d, n):
    d = np.uint64(d)
    for t in range(np.uint64(n)):
        dst[d + t] = 0


@njit(cache=True, error_model="numpy")
def _copy_run(dst, d, src, s, stride, n):
    d, s, stride = np.uint64(d), np.uint64(s), np.uint64(stride)
    for t in range(np.uint64(n)):
        dst[d + t] = src[s + t * stride]


@njit(cache=True, error_model="numpy")
def _add_run(dst, d, stride, src, s, n, scale):
    d, s, stride = np.uint64(d), np.uint64(s), np.uint64(stride)
    for t in range(np.uint64(n)):
        dst[d + t * stride] += scale * src[s + t]


# Reassociation for this one loop only: a plain float sum is a chain of adds LLVM must keep in order, one
# add latency (4 cycles) per element; in float64 lanes it vectorizes. The order differs from a sequential
# sum by rounding only, and float32 data is summed in float64 either way.
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def sum_run(src, s, n):
    acc = 0.0
    s = np.uint64(s)
    for t in range(np.uint64(n)):
        acc += np.float64(src[s + t])
    return acc


# Copies, fills and a scan's moves take a thread's share (tid, nt, S: see share at the end).
@njit(cache=True, error_model="numpy")
def copy(dst, src, T, r, tid, nt, S):
    n = np.uint64(T[r + 2])
    lo, hi = share(n, n, tid, nt, S)
    _copy_run(dst, np.uint64(T[r]) + lo, src, np.uint64(T[r + 1]) + lo, 1, hi - lo)


@njit(cache=True, error_model="numpy")
def fill(dst, T, r, value, tid, nt, S):
    do, n = np.uint64(T[r]), np.uint64(T[r + 1])
    lo, hi = share(n, n, tid, nt, S)
    for i in range(lo, hi):
        dst[do + i] = value


# Each function reads its offsets and sizes from its row of the int table T, starting at r (see
# compiler/codegen.py: the step function would otherwise compile one argument expression per int).

# ---- scan: one step of a sequence [pre, steps, post] (flattened around the scanned axis) in and out
@njit(cache=True, error_model="numpy")
def _scan_row(T, r):
    return np.uint64(T[r]), np.uint64(T[r + 1]), np.uint64(T[r + 2]), np.uint64(T[r + 3]), np.uint64(T[r + 4])


@njit(cache=True, error_model="numpy")
def scan_extract(dst, src, T, r, p, tid, nt, S):
    do, so, pre, steps, post = _scan_row(T, r)
    lo, hi = share(pre, pre * post, tid, nt, S)
    for a in range(lo, hi):
        _copy_run(dst, do + a * post, src, so + (a * steps + np.uint64(p)) * post, 1, post)


@njit(cache=True, error_model="numpy")
def scan_insert(dst, src, T, r, p, tid, nt, S):
    do, so, pre, steps, post = _scan_row(T, r)
    lo, hi = share(pre, pre * post, tid, nt, S)
    for a in range(lo, hi):
        _copy_run(dst, do + (a * steps + np.uint64(p)) * post, src, so + a * post, 1, post)


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
def _inside(shift, step, size, count):
    """The range [lo, hi) of t in [0, count) with 0 <= t * step + shift < size."""
    lo = min(count, max(0, -(shift // step)))
    hi = max(lo, min(count, (size - 1 - shift) // step + 1))
    return lo, hi


@njit(cache=True, error_model="numpy")
def _im2col(xa, x0, m, CHW, H, W, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, cols, ld):
    """Columns of m images: cols[(c, i, j), (b, oh, ow)] = x[b, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw],
    row length ld. The copy runs along ow, so this layout suits outputs wider than the filter."""
    P = OH * OW
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                shift = j * dw - pw
                lo, hi = _inside(shift, sw, W, OW)
                for b in range(m):
                    src = x0 + b * CHW + c * H * W
                    for oh in range(OH):
                        d = r * ld + b * P + oh * OW
                        h = oh * sh - ph + i * dh
                        if h < 0 or h >= H:
                            _zero_run(cols, d, OW)
                            continue
                        _zero_run(cols, d, lo)
                        _copy_run(cols, d + lo, xa, src + h * W + lo * sw + shift, sw, hi - lo)
                        _zero_run(cols, d + hi, OW - hi)


@njit(cache=True, error_model="numpy")
def _im2col_t(xa, x0, m, CHW, H, W, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, cols):
    """The transposed columns, cols[(b, oh, ow), (c, i, j)]: the copy runs along j, which suits filters
    wider than the output (a filter's gradient is such a convolution)."""
    rows = cg * kh * kw
    for b in range(m):
        for oh in range(OH):
            for ow in range(OW):
                d0 = ((b * OH + oh) * OW + ow) * rows
                lo, hi = _inside(ow * sw - pw, dw, W, kw)
                for c in range(cg):
                    src = x0 + b * CHW + c * H * W
                    for i in range(kh):
                        d = d0 + (c * kh + i) * kw
                        h = oh * sh - ph + i * dh
                        if h < 0 or h >= H:
                            _zero_run(cols, d, kw)
                            continue
                        _zero_run(cols, d, lo)
                        _copy_run(cols, d + lo, xa, src + h * W + ow * sw - pw + lo * dw, dw, hi - lo)
                        _zero_run(cols, d + hi, kw - hi)


@njit(cache=True, error_model="numpy")
def _conv_row(T, r):
    """A convolution's row of T: offsets of x, w, out and the workspace; x's [N, C, H, W]; out's channels K
    and w's second axis (conv's input channels per group, conv_transpose's output channels per group);
    the filter's KH, KW; out's OH, OW; stride, pad, dilation; groups; images per GEMM."""
    return (T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4], T[r + 5], T[r + 6], T[r + 7], T[r + 13], T[r + 9],
            T[r + 10], T[r + 11], T[r + 14], T[r + 15], T[r + 16], T[r + 17], T[r + 18], T[r + 19], T[r + 20],
            T[r + 21], T[r + 22], T[r + 23])


@njit(cache=True, error_model="numpy")
def _my_images(T, r, N, wso, tid, nt, S):
    """A window kernel's images [lo, hi) for thread tid, and the start of its workspace: each thread has
    its own (T[r + 25] elements; the arena holds one per thread), T[r + 26] the kernel's work."""
    lo, hi = share(np.uint64(N), np.uint64(T[r + 26]), tid, nt, S)
    return np.int64(lo), np.int64(hi), wso + tid * T[r + 25]


@njit(cache=True, error_model="numpy")
def _pad_planes(dst, d0, src, s0, planes, H, W, ph, pw):
    """Consecutive [H, W] planes of src from s0, into dst from d0 as [H + 2ph, W + 2pw] planes with zero
    borders."""
    Hp, Wp = H + 2 * ph, W + 2 * pw
    _zero_run(dst, d0, planes * Hp * Wp)
    for p in range(planes):
        for h in range(H):
            _copy_run(dst, d0 + (p * Hp + ph + h) * Wp + pw, src, s0 + (p * H + h) * W, 1, W)


@njit(cache=True, error_model="numpy")
def _wide_cols(cols, c0, src, s0, m, C, c_first, cg, kh, kw, dh, dw, Hp, Wp, Q):
    """Wide columns of m images of padded [C, Hp, Wp] planes from src[s0]: row (c, i, j) for image b is the
    run src[plane + i*dh*Wp + j*dw:][:Q], Q = OH * Wp, cut short (and zero-filled) at the plane's end."""
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                s = i * dh * Wp + j * dw
                n = min(Q, Hp * Wp - s)
                for b in range(m):
                    d = c0 + (r * m + b) * Q
                    _copy_run(cols, d, src, s0 + (b * C + c_first + c) * Hp * Wp + s, 1, n)
                    _zero_run(cols, d + n, Q - n)


@njit(cache=True, error_model="numpy")
def conv2d_wide(xa, wa, oa, wsa, T, r, tid, nt, S):
    """conv2d with stride 1: out[k, oh, ow] is column oh * Wp + ow of a GEMM whose column rows are whole
    runs of the padded input (_wide_cols), the columns between output rows (ow >= OW) computed and
    dropped. Runs of OH * Wp elements copy several times faster than im2col's runs of OW."""
    xo, wo, oo, wso, N, C, H, W, K, cg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Q, kg, rows, P = OH * Wp, K // groups, cg * kh * kw, OH * OW
    lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        res0, pad0 = wso + rows * m * Q, wso + (rows + kg) * m * Q
        if ph > 0 or pw > 0:
            _pad_planes(wsa, pad0, xa, xo + n0 * C * H * W, m * C, H, W, ph, pw)
        for g in range(groups):
            if ph > 0 or pw > 0:
                _wide_cols(wsa, wso, wsa, pad0, m, C, g * cg, cg, kh, kw, dh, dw, Hp, Wp, Q)
            else:
                _wide_cols(wsa, wso, xa, xo + n0 * C * H * W, m, C, g * cg, cg, kh, kw, dh, dw, Hp, Wp, Q)
            gemm(0, 0, kg, m * Q, rows, wa, wo + g * kg * rows, rows, wsa, wso, m * Q, wsa, res0, m * Q)
            for b in range(m):
                for k in range(kg):
                    for oh in range(OH):
                        _copy_run(oa, oo + ((n0 + b) * K + g * kg + k) * P + oh * OW,
                                  wsa, res0 + k * m * Q + b * Q + oh * Wp, 1, OW)


@njit(cache=True, error_model="numpy")
def conv2d_direct(xa, wa, oa, wsa, T, r, tid, nt, S):
    """conv2d with stride 1, dilation 1 and one group, for few taps (a first layer's few channels): a GEMM
    of the filters with the padded input itself, no columns. The product's rows are output channels, its
    columns the wide rows (OH * Wp, as conv2d_wide's), and its k one filter row's taps, whose rows of b
    are runs of the input each one element on from the last (_tile with a row stride of 1); the blocks
    are summed in registers over a channel's filter rows (k2). LeNet-5's c1 (1 channel in, 6 out, 25
    taps): 0.17 ms a step, single-threaded, where adding two taps at a time into two channels' rows in
    memory took 0.40, im2col's columns and BLAS's packing of them 1.46; for the thresholds against
    conv2d_wide see compiler/schedule.py. The workspace holds the image's padded planes, kw + 16 zeros
    after them (the wide rows' last columns, dropped, and the last vector's, read past the last plane)
    and K wide rows, each rounded up to whole vectors."""
    xo, wo, oo, wso, N, C, H, W, K, cg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    P, Q, taps = Hp * Wp, OH * Wp, C * kh * kw
    lanes = VECTOR_BYTES // wa.itemsize
    Qr = (Q + lanes - 1) // lanes * lanes
    lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    res0 = wso + C * P + kw + 16
    for n in range(lo, hi):
        _pad_planes(wsa, wso, xa, xo + n * C * H * W, C, H, W, ph, pw)
        _zero_run(wsa, wso + C * P, kw + 16)
        for c in range(C):  # a channel's kh filter rows: k2 runs of the input Wp apart
            _tile_blocks(K, Qr, wa, wo + c * kh * kw, taps, 1, wsa, wso + c * P, 1, wsa, res0, Qr, kw, c > 0,
                         kh, kw, Wp)
        for k in range(K):
            for y in range(OH):
                _copy_run(oa, oo + ((n * K + k) * OH + y) * OW, wsa, res0 + k * Qr + y * Wp, 1, OW)


@njit(cache=True, error_model="numpy")
def _scatter_transposed(oa, o0, image, src, s0, m, K, P):
    """A filter-layout product src[s0:] laid out [(b, p), k] into m output images of K planes of P
    positions. That product order, with the long axis first, makes BLAS 1.4-1.7x faster here than
    [k, (b, p)] (LeNet's filter gradients: K = 6 and 16 against P = 25)."""
    for b in range(m):
        for k in range(K):
            _copy_run(oa, o0 + b * image + k * P, src, s0 + b * P * K + k, K, P)


@njit(cache=True, error_model="numpy")
def _wide_filter_cols(cols, c0, src, s0, m, C, OH, OW, sh, sw, Hp, Wp, L, c_lo, c_hi):
    """Columns [(b, u, v), (c, q)] for a filter wider than its output: output (u, v) of image b reads
    src[plane c + u*sh*Wp + v*sw:][:L], L = kh * Wp, cut short (and zero-filled) at the plane's end;
    channels c_lo to c_hi."""
    for b in range(m):
        for u in range(OH):
            for v in range(OW):
                s = u * sh * Wp + v * sw
                n = min(L, Hp * Wp - s)
                for c in range(c_lo, c_hi):
                    d = c0 + (((b * OH + u) * OW + v) * C + c) * L
                    _copy_run(cols, d, src, s0 + (b * C + c) * Hp * Wp + s, 1, n)
                    _zero_run(cols, d + n, L - n)


@njit(cache=True, error_model="numpy")
def conv2d_direct_filter(xa, wa, oa, wsa, T, r, tid, nt, S):
    """conv2d_wide_filter's convolution (a filter wider than its output: a filter's gradient) for few
    output channels, without columns or GEMM: each output is a dot product of the filter widened to rows
    of Wp with a run of the padded input, blocks of 4 channels by 4 outputs of a row summed in registers
    (_dot_tile), one input channel at a time, added up over the channels. LeNet-5's c1 (6 output
    channels): 0.19 ms a step, single-threaded, where dot products of 4 outputs of one channel took
    0.39 and the columns (one run per output and channel) and BLAS's packing of them 1.36; with 16 (c3)
    conv2d_wide_filter is faster, 0.45 against 0.60. As in conv2d_wide_filter, the widened filter's
    zeros meet input values outside the window, so an inf there gives NaN where the reference would
    not. Threads split the images, or the output channels when there are fewer images than threads
    (each then pads every image in its own workspace). The workspace holds the image's padded planes,
    Wp + 20 zeros after them (the runs of a row's last outputs, beyond the row, and the last vector
    reach past the last plane) and the channels' widened filters for one input channel, each rounded up
    to whole vectors."""
    xo, wo, oo, wso, N, C, H, W, K, cg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    P, L = Hp * Wp, kh * Wp
    lanes = VECTOR_BYTES // wa.itemsize
    Lr = (L + lanes - 1) // lanes * lanes
    together = N < nt and T[r + 26] >= S[3]
    if together:
        lo, hi = 0, N
    else:
        lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    k_lo, k_hi = _part(K, together, tid, nt, S)
    if k_lo == k_hi:
        return
    if together:
        wso += tid * T[r + 25]
    ww0 = wso + C * P + Wp + 20
    for n in range(lo, hi):
        _pad_planes(wsa, wso, xa, xo + n * C * H * W, C, H, W, ph, pw)
        _zero_run(wsa, wso + C * P, Wp + 20)
        for c in range(C):
            for k in range(k_lo, k_hi):
                d = ww0 + (k - k_lo) * Lr
                for a in range(kh):
                    _copy_run(wsa, d + a * Wp, wa, wo + ((k * C + c) * kh + a) * kw, 1, kw)
                    _zero_run(wsa, d + a * Wp + kw, Wp - kw)
                _zero_run(wsa, d + L, Lr - L)
            for u in range(OH):  # rows of the output channels k_lo.. by runs of the input one element apart
                _dot_blocks(k_hi - k_lo, OW, wsa, ww0, Lr, wsa, wso + c * P + u * Wp, 1,
                            oa, oo + ((n * K + k_lo) * OH + u) * OW, OH * OW, Lr, c > 0)


@njit(cache=True, error_model="numpy")
def _part(n, together, tid, nt, S):
    """range(n) whole, or this thread's part of it when the threads work together."""
    if not together:
        return 0, n
    lo, hi = share(np.uint64(n), np.uint64(S[3]), tid, nt, S)
    return np.int64(lo), np.int64(hi)


@njit(cache=True, error_model="numpy")
def conv2d_wide_filter(xa, wa, oa, wsa, T, r, tid, nt, S):
    """conv2d with a filter wider than its output, dilation 1, one group (a filter's gradient): the filter
    widened to rows of Wp with zeros is contracted with runs of whole padded input rows. The zeros meet
    input values outside the window, so an inf there gives NaN where the reference would not.
    With fewer images than threads (the first layer's filter gradient has one, its input channel) the
    threads work together on each chunk: they split the widened filter by output channel, the columns
    by channel and the product by rows, meeting between, in one workspace."""
    xo, wo, oo, wso, N, C, H, W, K, cg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    L, UV = kh * Wp, OH * OW
    together = N < nt and T[r + 26] >= S[3]
    if together:
        lo, hi = 0, N
    else:
        lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    if lo == hi:
        return
    cols0 = wso + K * C * L
    k_lo, k_hi = _part(K, together, tid, nt, S)
    for k in range(k_lo, k_hi):
        for c in range(C):
            for a in range(kh):
                d = wso + (k * C + c) * L + a * Wp
                _copy_run(wsa, d, wa, wo + ((k * C + c) * kh + a) * kw, 1, kw)
                _zero_run(wsa, d + kw, Wp - kw)
    c_lo, c_hi = _part(C, together, tid, nt, S)
    # regions placed for whole chunks: a smaller last chunk's padding, written by the other threads while
    # thread 0 still scatters the chunk before, must not move into that chunk's products
    res0 = cols0 + nb * UV * C * L
    pad0 = res0 + K * nb * UV
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        src, s0 = xa, xo + n0 * C * H * W
        if ph > 0 or pw > 0:
            for b in range(m):  # this thread's channels of each image
                _pad_planes(wsa, pad0 + (b * C + c_lo) * Hp * Wp, xa, xo + ((n0 + b) * C + c_lo) * H * W, c_hi - c_lo,
                            H, W, ph, pw)
            src, s0 = wsa, pad0
        _wide_filter_cols(wsa, cols0, src, s0, m, C, OH, OW, sh, sw, Hp, Wp, L, c_lo, c_hi)
        if together and barrier(S, nt):
            return
        r_lo, r_hi = _part(m * UV, together, tid, nt, S)
        if r_hi > r_lo:
            gemm(0, 1, r_hi - r_lo, K, C * L, wsa, cols0 + r_lo * C * L, C * L, wsa, wso, C * L, wsa, res0 + r_lo * K, K)
        if together and barrier(S, nt):
            return
        if tid == 0 or not together:
            _scatter_transposed(oa, oo + n0 * K * UV, K * UV, wsa, res0, m, K, UV)


@njit(cache=True, error_model="numpy")
def conv2d(xa, wa, oa, wsa, T, r, tid, nt, S):
    """out [N, K, OH, OW] = x [N, C, H, W] correlated with w [K, C/groups, KH, KW]: im2col of a chunk of
    nb images (T[r + 23]) and one GEMM per chunk and group, the columns laid out as T[r + 24] says
    (compiler/schedule.py's CONV_ALONG_OUTPUT or CONV_ALONG_FILTER)."""
    xo, wo, oo, wso, N, C, H, W, K, cg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    along_filter = T[r + 24] == 1
    kg, rows, P = K // groups, cg * kh * kw, OH * OW
    lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    res0 = wso + rows * nb * P
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        for g in range(groups):
            x0 = xo + (n0 * C + g * cg) * H * W
            if along_filter:
                _im2col_t(xa, x0, m, C * H * W, H, W, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, wsa[wso:])
                gemm(0, 1, m * P, kg, rows, wsa, wso, rows, wa, wo + g * kg * rows, rows, wsa, res0, kg)
                _scatter_transposed(oa, oo + (n0 * K + g * kg) * P, K * P, wsa, res0, m, kg, P)
                continue
            _im2col(xa, x0, m, C * H * W, H, W, cg, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, wsa[wso:], m * P)
            if m == 1:  # straight into the output
                gemm(0, 0, kg, P, rows, wa, wo + g * kg * rows, rows, wsa, wso, P, oa, oo + (n0 * K + g * kg) * P, P)
                continue
            gemm(0, 0, kg, m * P, rows, wa, wo + g * kg * rows, rows, wsa, wso, m * P, wsa, res0, m * P)
            for b in range(m):
                for k in range(kg):
                    _copy_run(oa, oo + ((n0 + b) * K + g * kg + k) * P, wsa, res0 + (k * m + b) * P, 1, P)


@njit(cache=True, error_model="numpy", inline="always")  # a call per tap and image costs 3% of LeNet's step
def _add_tap(oa, o0, src, s0, H, W, OH, OW, i, j, sh, sw, ph, pw, dh, dw, scale):
    """col2im for one filter tap (i, j): add scale * the plane src[s0:s0 + H*W] into the output plane at
    o0, input position (h, v) landing on (h*sh - ph + i*dh, v*sw - pw + j*dw) where that is inside."""
    shift = j * dw - pw
    lo, hi = _inside(shift, sw, OW, W)
    for h in range(H):
        oh = h * sh - ph + i * dh
        if 0 <= oh < OH:
            _add_run(oa, o0 + oh * OW + lo * sw + shift, sw, src, s0 + h * W + lo, hi - lo, scale)


@njit(cache=True, error_model="numpy")
def conv_transpose2d_wide(xa, wa, oa, wsa, T, r, tid, nt, S):
    """conv_transpose2d with stride 1: the input's rows are widened with zeros to the padded output's
    width Wb, so that each filter tap's columns add into the padded output as one run per plane; the pad
    is cropped at the end."""
    xo, wo, oo, wso, N, C, H, W, K, kg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    cg, rows = C // groups, kg * kh * kw
    Hb, Wb = max(H + dh * (kh - 1), OH + ph), max(W + dw * (kw - 1), OW + pw)
    Q, HbWb = H * Wb, Hb * Wb
    lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        xg0 = wso + rows * m * Q
        out0 = xg0 + cg * m * Q
        _zero_run(wsa, out0, m * K * HbWb)
        for g in range(groups):
            for c in range(cg):
                for b in range(m):
                    for h in range(H):
                        d = xg0 + (c * m + b) * Q + h * Wb
                        _copy_run(wsa, d, xa, xo + (((n0 + b) * C + g * cg + c) * H + h) * W, 1, W)
                        _zero_run(wsa, d + W, Wb - W)
            gemm(1, 0, rows, m * Q, cg, wa, wo + g * cg * rows, rows, wsa, xg0, m * Q, wsa, wso, m * Q)
            for k in range(kg):
                for i in range(kh):
                    for j in range(kw):
                        rr = (k * kh + i) * kw + j
                        s = i * dh * Wb + j * dw
                        n = min(Q, HbWb - s)
                        for b in range(m):
                            _add_run(wsa, out0 + (b * K + g * kg + k) * HbWb + s, 1, wsa, wso + (rr * m + b) * Q, n, 1.0)
        for b in range(m):
            for k in range(K):
                for oh in range(OH):
                    _copy_run(oa, oo + ((n0 + b) * K + k) * OH * OW + oh * OW, wsa, out0 + (b * K + k) * HbWb + (oh + ph) * Wb + pw, 1, OW)


@njit(cache=True, error_model="numpy")
def conv_transpose2d_depthwise(xa, wa, oa, wsa, T, r, tid, nt, S):
    """conv_transpose2d with one channel in and out per group (avg_pool's gradient): each filter tap's
    plane is added directly, no GEMM."""
    xo, wo, oo, wso, N, C, H, W, K, kg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    HW, OP = H * W, OH * OW
    lo, hi, _ = _my_images(T, r, N, wso, tid, nt, S)
    _zero_run(oa, oo + lo * K * OP, (hi - lo) * K * OP)
    pairs = kw == 2 and sw == 2 and dw == 1 and pw == 0 and OW >= 2 * W  # a 2-wide pool's gradient
    for n in range(lo, hi):
        for c in range(C):
            for i in range(kh):
                if pairs:
                    _add_tap_pair(oa, oo + (n * K + c) * OP, xa, xo + (n * C + c) * HW, H, W, OH, OW, i, sh, ph,
                                  dh, wa[wo + (c * kh + i) * 2], wa[wo + (c * kh + i) * 2 + 1])
                    continue
                for j in range(kw):
                    _add_tap(oa, oo + (n * K + c) * OP, xa, xo + (n * C + c) * HW, H, W, OH, OW, i, j,
                             sh, sw, ph, pw, dh, dw, wa[wo + (c * kh + i) * kw + j])


@njit(cache=True, error_model="numpy", inline="always")
def _add_tap_pair(oa, o0, src, s0, H, W, OH, OW, i, sh, ph, dh, w0, w1):
    """Taps (i, 0) and (i, 1) of a transposed convolution with width stride 2 and no width padding: input
    column v lands on output columns 2v and 2v + 1 (OW >= 2W). Writing both in one loop makes the stores
    one interleaved group, which LLVM vectorizes; one tap at a time is a stride-2 scatter, which it does not."""
    for h in range(H):
        oh = h * sh - ph + i * dh
        if 0 <= oh < OH:
            o, s = np.uint64(o0 + oh * OW), np.uint64(s0 + h * W)
            for v in range(np.uint64(W)):
                x = src[s + v]
                oa[o + v * np.uint64(2)] += w0 * x
                oa[o + v * np.uint64(2) + np.uint64(1)] += w1 * x


@njit(cache=True, error_model="numpy")
def conv_transpose2d(xa, wa, oa, wsa, T, r, tid, nt, S):
    """out [N, K, OH, OW] = the adjoint of conv2d: x [N, C, H, W], w [C, K/groups, KH, KW]. One GEMM per
    chunk of nb images and group gives the columns, which col2im adds into the output."""
    xo, wo, oo, wso, N, C, H, W, K, kg, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, groups, nb = _conv_row(T, r)
    cg, rows, HW, OP = C // groups, kg * kh * kw, H * W, OH * OW
    lo, hi, wso = _my_images(T, r, N, wso, tid, nt, S)
    _zero_run(oa, oo + lo * K * OP, (hi - lo) * K * OP)
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        for g in range(groups):
            w0 = wo + g * cg * rows
            if m == 1:
                gemm(1, 0, rows, HW, cg, wa, w0, rows, xa, xo + (n0 * C + g * cg) * HW, HW, wsa, wso, HW)
            else:  # the chunk's channels side by side: [cg, (b, h, w)]
                xg0 = wso + rows * m * HW
                for c in range(cg):
                    for b in range(m):
                        _copy_run(wsa, xg0 + (c * m + b) * HW, xa, xo + ((n0 + b) * C + g * cg + c) * HW, 1, HW)
                gemm(1, 0, rows, m * HW, cg, wa, w0, rows, wsa, xg0, m * HW, wsa, wso, m * HW)
            flat = wsa[wso:]
            for k in range(kg):
                for i in range(kh):
                    for j in range(kw):
                        rr = (k * kh + i) * kw + j
                        for b in range(m):
                            _add_tap(oa, oo + ((n0 + b) * K + g * kg + k) * OP, flat, (rr * m + b) * HW,
                                     H, W, OH, OW, i, j, sh, sw, ph, pw, dh, dw, 1.0)


@njit(cache=True, error_model="numpy")
def _pool2d(xa, oa, T, r, is_max, tid, nt, S):
    """Max or average over each window, a whole output row per window tap (no test per element inside the
    loop over the row). The average is over the window's part inside the padded input (count_include_pad,
    as the reference)."""
    xo, oo, N, C, H, W, OH, OW = T[r], T[r + 1], T[r + 2], T[r + 3], T[r + 4], T[r + 5], T[r + 8], T[r + 9]
    kh, kw, sh, sw, ph, pw = T[r + 10], T[r + 11], T[r + 12], T[r + 13], T[r + 14], T[r + 15]
    st = np.uint64(sw)
    lo, hi = share(np.uint64(N), np.uint64(T[r + 16]), tid, nt, S)
    for p in range(np.int64(lo) * C, np.int64(hi) * C):
        for oh in range(OH):
            o = oo + (p * OH + oh) * OW
            if is_max:
                for t in range(o, o + OW):
                    oa[t] = -np.inf
            else:
                _zero_run(oa, o, OW)
            for i in range(kh):
                h = oh * sh - ph + i
                if 0 <= h < H:
                    for j in range(kw):
                        lo, hi = _inside(j - pw, sw, W, OW)
                        d, x = np.uint64(o + lo), np.uint64(xo + (p * H + h) * W + lo * sw + j - pw)
                        # a constant stride 2 lets LLVM vectorize the interleaved loads
                        if is_max and sw == 2:
                            for t in range(np.uint64(hi - lo)):
                                oa[d + t] = np.maximum(oa[d + t], xa[x + t * np.uint64(2)])
                        elif is_max:
                            for t in range(np.uint64(hi - lo)):
                                oa[d + t] = np.maximum(oa[d + t], xa[x + t * st])
                        elif sw == 2:
                            for t in range(np.uint64(hi - lo)):
                                oa[d + t] += xa[x + t * np.uint64(2)]
                        else:
                            for t in range(np.uint64(hi - lo)):
                                oa[d + t] += xa[x + t * st]
            if not is_max:
                rows = max(0, min(kh, H + 2 * ph - oh * sh))  # window rows inside the padded input
                for ow in range(OW):
                    oa[o + ow] /= rows * max(0, min(kw, W + 2 * pw - ow * sw))


@njit(cache=True, error_model="numpy")
def _pool2x2(xa, oa, xo, oo, p_lo, p_hi, H, W, OH, OW, is_max):
    """2x2 windows at stride 2 without padding (LeNet-5's, VGG's) for planes [p_lo, p_hi): each window's
    four values in one pass, which LLVM vectorizes as interleaved loads, where _pool2d's general loop
    makes a pass per tap over rows as short as the output's (LeNet-5's s2 and s4: 0.26 and 0.16 ms a
    step against 0.05 and 0.02). Sums in the general loop's order."""
    one, two = np.uint64(1), np.uint64(2)
    for p in range(p_lo, p_hi):
        for oh in range(OH):
            r0 = np.uint64(xo + (p * H + 2 * oh) * W)
            r1, o = r0 + np.uint64(W), np.uint64(oo + (p * OH + oh) * OW)
            for t in range(np.uint64(OW)):
                a, b = xa[r0 + two * t], xa[r0 + two * t + one]
                c, d = xa[r1 + two * t], xa[r1 + two * t + one]
                if is_max:
                    oa[o + t] = np.maximum(np.maximum(np.maximum(a, b), c), d)
                else:
                    oa[o + t] = (a + b + c + d) / 4


@njit(cache=True, error_model="numpy")
def max_pool2d(xa, oa, T, r, tid, nt, S):
    _pool2d(xa, oa, T, r, True, tid, nt, S)


@njit(cache=True, error_model="numpy")
def avg_pool2d(xa, oa, T, r, tid, nt, S):
    _pool2d(xa, oa, T, r, False, tid, nt, S)


@njit(cache=True, error_model="numpy")
def _pool2x2_images(xa, oa, T, r, is_max, tid, nt, S):
    """_pool2d's row of T, for windows that code generation knows are 2x2 at stride 2 inside the input
    (the sizes of both are constants): this thread's images by _pool2x2. A model then never compiles
    _pool2d's general loops (about 0.9 s of a cold start); symbolic image sizes take those."""
    C, H, W, OH, OW = T[r + 3], T[r + 4], T[r + 5], T[r + 8], T[r + 9]
    lo, hi = share(np.uint64(T[r + 2]), np.uint64(T[r + 16]), tid, nt, S)
    _pool2x2(xa, oa, T[r], T[r + 1], np.int64(lo) * C, np.int64(hi) * C, H, W, OH, OW, is_max)


@njit(cache=True, error_model="numpy")
def max_pool2x2(xa, oa, T, r, tid, nt, S):
    _pool2x2_images(xa, oa, T, r, True, tid, nt, S)


@njit(cache=True, error_model="numpy")
def avg_pool2x2(xa, oa, T, r, tid, nt, S):
    _pool2x2_images(xa, oa, T, r, False, tid, nt, S)


@njit(cache=True, error_model="numpy")
def max_pool_grad2d(xa, oa, ga, gxa, T, r, tid, nt, S):
    """Each window's cotangent goes to the first element (in scan order) equal to its maximum."""
    xo, oo, go, gxo = T[r], T[r + 1], T[r + 2], T[r + 3]
    N, C, H, W, OH, OW = T[r + 4], T[r + 5], T[r + 6], T[r + 7], T[r + 10], T[r + 11]
    kh, kw, sh, sw, ph, pw = T[r + 12], T[r + 13], T[r + 14], T[r + 15], T[r + 16], T[r + 17]
    x = xa[xo:xo + N * C * H * W].reshape((N, C, H, W))
    out = oa[oo:oo + N * C * OH * OW].reshape((N, C, OH, OW))
    g = ga[go:go + N * C * OH * OW].reshape((N, C, OH, OW))
    gx = gxa[gxo:gxo + N * C * H * W].reshape((N, C, H, W))
    lo, hi = share(np.uint64(N), np.uint64(T[r + 18]), tid, nt, S)
    gx[np.int64(lo):np.int64(hi)] = 0
    for n in range(np.int64(lo), np.int64(hi)):
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


# ---- float32 exp, tanh, sigmoid and erf that LLVM can vectorize (libm's are scalar calls, ~20 ns each, and
# dominate convolutional and recurrent steps). Cephes's single-precision algorithms: range reduction and
# a short polynomial, with a bit cast for 2^n; within 2 ulp of the exact value. Branches are selects.
# LLVM inlines them into each loop and vectorizes it; numba's inline="always" gave the same machine code
# but typed the body again at every call site: 0.45 against 0.19 s to compile a kernel calling tanh32.
# fastmath "contract" lets LLVM fuse their multiply-adds: exp32 0.98 -> 0.75 ns an element (with
# tanh32 and sigmoid32 on an exp without checks, 1.58 -> 1.06 and 1.21 -> 0.72), no less accurate.
@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


_F = np.float32


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _exp32_reduced(x):
    """(y, n) with exp(x) = y * 2^n, n a whole number as a float32, y within [0.7, 1.5)."""
    n = np.floor(x * _F(1.442695040888963) + _F(0.5))
    r = x - n * _F(0.693359375) + n * _F(2.12194440e-4)
    y = ((((_F(1.9875691500e-4) * r + _F(1.3981999507e-3)) * r + _F(8.3334519073e-3)) * r
          + _F(4.1665795894e-2)) * r + _F(1.6666665459e-1)) * r + _F(5.0000001201e-1)
    return y * (r * r) + r + _F(1.0), n


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _exp32_within(x):
    """exp(x) for x from -87.33 to 88 (2^n a normal float32): without exp32's checks of its range and
    for NaN, for callers that keep x there and check NaN themselves (tanh32, sigmoid32)."""
    y, n = _exp32_reduced(x)
    return y * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def exp32(x):
    y, n = _exp32_reduced(min(max(x, _F(-87.33654)), _F(88.72284)))
    # 2^n with n up to 128, whose exponent field would be infinity's: 2^(n - 1) * 2 (x up to 88.72)
    k = np.int32(n)
    s = np.int32(1) if k > np.int32(0) else np.int32(0)
    y = y + y if k > np.int32(0) else y
    v = y * _float32_from_bits((k - s + np.int32(127)) << np.int32(23))
    v = _F(np.inf) if x > _F(88.72284) else v
    v = _F(0.0) if x < _F(-87.33654) else v
    return x if x != x else v


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def tanh32(x):
    a = abs(x)
    z = x * x
    small = ((((_F(-5.70498872745e-3) * z + _F(2.06390887954e-2)) * z - _F(5.37397155531e-2)) * z
              + _F(1.33314422036e-1)) * z - _F(3.33332819422e-1)) * z * x + x
    large = _F(1.0) - _F(2.0) / (_exp32_within(_F(2.0) * min(a, _F(10.0))) + _F(1.0))  # tanh(10) is 1 in float32
    large = -large if x < _F(0.0) else large
    return small if a < _F(0.625) else large


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def sigmoid32(x):
    # below -88 the result is under float32's normal range, and 0 as exp32's overflow made it; above
    # 87.33 it is 1 in float32
    v = _F(1.0) / (_F(1.0) + _exp32_within(min(max(-x, _F(-87.33654)), _F(88.0))))
    v = _F(0.0) if x < _F(-88.0) else v
    return x if x != x else v


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def erf32(x):
    """Two polynomials fitted for dlc by least squares on Chebyshev nodes against scipy.special.erf(c):
    x * P(x^2) below 1 (relative error 5e-8), 1 - exp(-x^2) * Q(1/|x|) from 1 to 4 (absolute error 4e-9);
    past 4, erf is 1 in float32. Evaluated in float32: within 2e-7 relative. GELU calls it for every
    activation, and libm's is a scalar call."""
    a = min(abs(x), _F(4.0))
    z = a * a
    small = (((((_F(-5.696713072267838e-4) * z + _F(4.93451884952651e-3)) * z - _F(2.6726989801446516e-2)) * z
               + _F(1.1280788961390041e-1)) * z - _F(3.7612414726305754e-1)) * z + _F(1.1283791499525764)) * a
    t = _F(1.0) / max(a, _F(1.0))
    q = ((((((_F(-1.869007976359207e-2) * t + _F(1.2443532198800754e-1)) * t - _F(3.611264587600047e-1)) * t
             + _F(5.825459297757647e-1)) * t - _F(5.096922999809503e-1)) * t + _F(5.2210073081209125e-2)) * t
         + _F(5.575372467658732e-1)) * t + _F(3.6385291886585836e-4)
    large = _F(1.0) - exp32(-z) * q
    v = small if a < _F(1.0) else large
    v = -v if x < _F(0.0) else v
    return x if x != x else v


# ---- threads: a step function runs in every thread at once (compiled.py's Team), each thread takes its
# share of the items that split, and the threads meet at a barrier between items. S is the team's int64
# array: S[0] threads arrived, S[1] the barrier's generation, S[2] set when a thread failed, S[3] the grain.
def _atomic_intrinsic(kind):
    """An intrinsic (arr, index, value) -> old value of arr[index]: `kind` as one sequentially consistent
    atomic operation on an int64 array ("add", "xchg"; "load" ignores value)."""
    def typer(typingctx, arr, index, value):
        def codegen(context, builder, signature, args):
            a = context.make_array(arr)(context, builder, value=args[0])
            ptr = builder.gep(a.data, [args[1]])
            if kind == "load":
                return builder.load_atomic(ptr, "seq_cst", 8)
            return builder.atomic_rmw(kind, ptr, args[2], "seq_cst")
        return types.int64(arr, index, value), codegen
    typer.__name__ = f"_atomic_{kind}"
    return intrinsic(typer)


_atomic_add, _atomic_xchg, _atomic_load = (_atomic_intrinsic(k) for k in ("add", "xchg", "load"))


@intrinsic
def monotonic_ns(typingctx):
    """The monotonic clock in nanoseconds, read by libc's clock_gettime (a profile's clock: leaving
    nopython mode for time.perf_counter costs microseconds a call, more than most kernels take)."""
    import sys
    import time
    clock = getattr(time, "CLOCK_MONOTONIC", None)
    if clock is None or sys.maxsize < 2 ** 32:  # no clock_gettime, or another struct timespec
        return None

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ts = cgutils.alloca_once(builder, ir.LiteralStructType([i64, i64]))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, ts.type]), "clock_gettime")
        builder.call(fn, [ir.Constant(i32, clock), ts])
        sec, nsec = (builder.load(cgutils.gep_inbounds(builder, ts, 0, f)) for f in (0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 10 ** 9)), nsec)
    return types.int64(), codegen


# ---- calls by address: a step function calls its kernels through run("kernel", K[i], ...)
TYPED_RUNS: dict = {}  # kernel name -> the argument types of every run() of it typed in this process


@intrinsic
def run(typingctx, name, address, *args):
    """Call the machine code at address (an int64) with args, as the kernel `name` (a string constant, for
    the reader) called with them would run. numba links every callee's code into its caller's and
    generates machine code for all of it again: LeNet-5's train_step held 55 functions, and generating
    them was 1.1 of its 2.5 s cold compile. Called by address, a step function holds its own code only, and
    compiles without waiting for its kernels. compiled.py's kernel_addresses finds the address for the same
    argument types (unliteral, as numba's call of the kernel would take them), for a kernel that returns
    nothing; TYPED_RUNS lets it check that the types agree."""
    if not isinstance(name, types.StringLiteral) or not isinstance(address, types.Integer):
        return None
    argtys = tuple(types.unliteral(a) for a in args)
    TYPED_RUNS.setdefault(name.literal_value, set()).add(argtys)

    def codegen(context, builder, signature, llargs):
        fnty = context.call_conv.get_function_type(types.none, argtys)
        fn = builder.inttoptr(llargs[1], fnty.as_pointer())
        values = [context.cast(builder, v, t, u)
                  for v, t, u in zip(cgutils.unpack_tuple(builder, llargs[2]), args, argtys)]
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtys, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return types.none(name, address, types.StarArgTuple(args)), codegen


if os.name == "posix":
    _yield = types.ExternalFunction("sched_yield", types.int32())
else:
    @njit(cache=True)
    def _yield():
        return 0


@njit(cache=True, error_model="numpy")
def barrier(S, nt):
    """Wait until all nt threads have arrived. True when a thread failed (the caller returns at once).
    A wait longer than a few microseconds yields the core: on a busy machine the thread waited for may
    be the one that needs it."""
    if nt == 1:
        return False
    gen = _atomic_load(S, 1, 0)
    if _atomic_add(S, 0, 1) == nt - 1:  # the last to arrive releases the others
        _atomic_xchg(S, 0, 0)
        _atomic_add(S, 1, 1)
    else:
        spins = 0
        while _atomic_load(S, 1, 0) == gen:
            if _atomic_load(S, 2, 0) != 0:
                return True
            spins += 1
            if spins > 2000:
                _yield()
    return _atomic_load(S, 2, 0) != 0


@lru_cache(maxsize=1)
def _find_openblas():
    """The OpenBLAS that scipy ships (scipy.libs/ on Linux, .dylibs/ on macOS), found without importing scipy:
    (its ctypes library, its symbol prefix) or None."""
    import glob
    import importlib.util
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    here = list(spec.submodule_search_locations)[0]
    for path in sorted(glob.glob(here + ".libs/*openblas*") + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))):
        try:
            dll = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            if hasattr(dll, prefix + "sgemm_") and hasattr(dll, prefix + "dgemm_"):
                return dll, prefix
    return None


def _register_gemm():
    """Make the symbols dlc_sgemm and dlc_dgemm (Fortran BLAS's gemm, arguments by reference) known to
    LLVM, so that generated code calls them by name and numba's cache can hold that code. Taken from
    scipy's OpenBLAS library when it is there: numba's own BLAS glue would import scipy.linalg for its
    pointer, 0.075 s of a warm start. Else from scipy.linalg.cython_blas, which has the same signature.
    Also the table of _gemm's machine code per dtype (link_gemm), which gemm calls through."""
    from llvmlite import binding
    found = _find_openblas()
    for kind in "sd":
        if found is not None:
            dll, prefix = found
            address = ctypes.cast(getattr(dll, f"{prefix}{kind}gemm_"), ctypes.c_void_p).value
        else:
            from scipy.linalg import cython_blas
            capsule = cython_blas.__pyx_capi__[f"{kind}gemm"]
            get = ctypes.pythonapi.PyCapsule_GetPointer
            get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
            name = ctypes.pythonapi.PyCapsule_GetName
            name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
            address = get(capsule, name(capsule))
        binding.add_symbol(f"dlc_{kind}gemm", address)
    binding.add_symbol("dlc_gemm_table", ctypes.addressof(_GEMM_TABLE))


_GEMM_TABLE = (ctypes.c_void_p * 2)()  # per dtype of _GEMM_DTYPES: its _gemm's address, once link_gemm put it there
_GEMM_LINKED: dict = {}  # dtype -> the compiled _gemm (kept alive: the table points into its code)
_register_gemm()


def _call_blas(builder, dt, ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc):
    """Emit Fortran BLAS's gemm (dlc_sgemm or dlc_dgemm, dt the LLVM float type) for row-major pointers:
    column-major BLAS sees each row-major matrix transposed, c^T = op(b)^T @ op(a)^T."""
    char, i32 = ir.IntType(8), ir.IntType(32)
    ptr = dt.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [char.as_pointer(), char.as_pointer()] + [i32.as_pointer()] * 3 +
                           [ptr, ptr, i32.as_pointer(), ptr, i32.as_pointer(), ptr, ptr, i32.as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "dlc_sgemm" if dt == ir.FloatType() else "dlc_dgemm")

    def ref(value):  # an int, by reference, as Fortran takes it
        return cgutils.alloca_once_value(builder, builder.trunc(value, i32))

    def flag(t):
        v = builder.select(builder.icmp_unsigned("!=", t, ir.Constant(t.type, 0)), ir.Constant(char, ord("T")),
                           ir.Constant(char, ord("N")))
        return cgutils.alloca_once_value(builder, v)
    alpha = cgutils.alloca_once_value(builder, ir.Constant(dt, 1.0))
    beta = cgutils.alloca_once_value(builder, ir.Constant(dt, 0.0))
    builder.call(fn, [flag(tb), flag(ta), ref(n), ref(m), ref(k), alpha, pb, ref(ldb), pa, ref(lda), beta, pc,
                      ref(ldc)])


_GEMM_DTYPES = (types.float32, types.float64)


def _gemm_operands(a, b, c) -> bool:
    """Whether the types of a gemm's or a register block's three arrays are ones its code handles."""
    return isinstance(a, types.Array) and a.dtype in _GEMM_DTYPES and b == a and c == a


def _gemm_intrinsic(blas_only: bool):
    """The intrinsic gemm (blas_only=False) or _blas_gemm: the pointers to a[ao], b[bo] and c[co] and
    every size as an int64, passed to the machine code of _gemm for the dtype that link_gemm put in the
    table dlc_gemm_table, or to BLAS where it has not (or always, for _blas_gemm)."""
    def typer(typingctx, ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc):
        if not _gemm_operands(a, b, c):
            return None
        return types.void(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc), codegen

    def codegen(context, builder, signature, args):
        a = signature.args[5]
        i64 = ir.IntType(64)
        v = [context.cast(builder, x, t, types.int64) if isinstance(t, (types.Integer, types.Boolean)) else x
             for x, t in zip(args, signature.args)]

        def at(i):  # the pointer to an operand's first element
            arr = context.make_array(signature.args[i])(context, builder, value=args[i])
            return builder.gep(arr.data, [v[i + 1]])
        ta, tb, m, n, k, lda, ldb, ldc = (v[i] for i in (0, 1, 2, 3, 4, 7, 10, 13))
        pa, pb, pc = at(5), at(8), at(11)
        dt = context.get_value_type(a.dtype)
        if blas_only:
            _call_blas(builder, dt, ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc)
            return context.get_dummy_value()
        ptr = dt.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i64] * 5 + [ptr, i64, ptr, i64, ptr, i64])
        table = builder.module.globals.get("dlc_gemm_table")
        if table is None:
            table = ir.GlobalVariable(builder.module, ir.ArrayType(ir.IntType(8).as_pointer(), len(_GEMM_DTYPES)),
                                      "dlc_gemm_table")
        slot = ir.Constant(ir.IntType(32), _GEMM_DTYPES.index(a.dtype))
        address = builder.load(builder.gep(table, [ir.Constant(ir.IntType(32), 0), slot]))
        with builder.if_else(cgutils.is_null(builder, address)) as (missing, linked):
            with missing:
                _call_blas(builder, dt, ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc)
            with linked:
                builder.call(builder.bitcast(address, fnty.as_pointer()), [ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc])
        return context.get_dummy_value()
    return intrinsic(typer)


_blas_gemm = _gemm_intrinsic(blas_only=True)


def _vector_bytes() -> int:
    """The widest vector registers LLVM may use on this CPU: 64 bytes with AVX-512, else 32."""
    try:
        from llvmlite import binding
        return 64 if binding.get_host_cpu_features().get("avx512f") else 32
    except (ImportError, RuntimeError):
        return 32


VECTOR_BYTES = _vector_bytes()
TILE_ROWS, TILE_VECTORS = 4, (4 if VECTOR_BYTES == 64 else 2)  # accumulators: 16 of 32 registers, 8 of 16
# a @ b runs over k in chunks of this many rows of b, whose block's columns (128 x 4 vectors: 32 KiB at
# most) then stay in the first-level cache for every block of rows of a: in one pass over all k, a
# row stride of b of a power of two (512 floats) left only a few cache sets for them, and 128x1600 @
# 1600x512 ran at 110 GFLOP/s against 170-200 in chunks, as OpenBLAS, here with its Haswell kernels
TILE_CHUNK = 128


def _tile(rows: int, vectors: int):
    """An intrinsic (a, ao, si, sp, b, bo, ldb, c, co, ldc, k, more, k2, sa, sb): the block c[co + i * ldc
    + j] = (c's value there if more, else 0) + the sum over q < k2 and p < k of a[ao + q * sa + i * si +
    p * sp] * b[bo + q * sb + p * ldb + j], for i < rows and j < vectors * the lanes of a vector
    register, its sums held in registers. A product has k2 = 1; a convolution (conv2d_direct) sums k
    taps along a filter row, k2 rows. Written as LLVM vectors because numba's loops keep a block of sums
    in memory, which costs a load and a store per multiply-add."""
    def typer(typingctx, a, ao, si, sp, b, bo, ldb, c, co, ldc, k, more, k2, sa, sb):
        if not _gemm_operands(a, b, c):
            return None
        i = types.intp
        return types.void(a, i, i, i, b, i, i, c, i, i, i, types.boolean, i, i, i), codegen

    def codegen(context, builder, signature, args):
        a, b, c = signature.args[0], signature.args[4], signature.args[7]
        va, vao, vsi, vsp, vb, vbo, vldb, vc, vco, vldc, vk, vmore, vk2, vsa, vsb = args
        dt = context.get_value_type(a.dtype)
        lanes = VECTOR_BYTES // context.get_abi_sizeof(dt)
        vec, i32 = ir.VectorType(dt, lanes), ir.IntType(32)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fma.v{lanes}f{context.get_abi_sizeof(dt) * 8}")

        def at(arr, ty, off):
            return builder.gep(context.make_array(ty)(context, builder, value=arr).data, [off])

        def vector_at(row, v):
            return builder.bitcast(builder.gep(row, [ir.Constant(vk.type, v * lanes)]), vec.as_pointer())
        pa, pb, pc = at(va, a, vao), at(vb, b, vbo), at(vc, c, vco)
        zero = ir.Constant(vec, [ir.Constant(dt, 0.0)] * lanes)
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(rows)]
        with builder.if_then(vmore):
            for i in range(rows):
                crow = builder.gep(pc, [builder.mul(ir.Constant(vk.type, i), vldc)])
                for v in range(vectors):
                    builder.store(builder.load(vector_at(crow, v), align=context.get_abi_sizeof(dt)), sums[i][v])
        undef, first = ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
        with cgutils.for_range(builder, vk2) as outer:
            qa = builder.gep(pa, [builder.mul(outer.index, vsa)])
            qb = builder.gep(pb, [builder.mul(outer.index, vsb)])
            with cgutils.for_range(builder, vk) as loop:
                p = loop.index
                brow = builder.gep(qb, [builder.mul(p, vldb)])
                bv = [builder.load(vector_at(brow, v), align=context.get_abi_sizeof(dt)) for v in range(vectors)]
                acol = builder.gep(qa, [builder.mul(p, vsp)])
                for i in range(rows):
                    x = builder.load(builder.gep(acol, [builder.mul(ir.Constant(vk.type, i), vsi)]))
                    xs = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)), undef, first)
                    for v in range(vectors):
                        builder.store(builder.call(fma, [xs, bv[v], builder.load(sums[i][v])]), sums[i][v])
        for i in range(rows):
            crow = builder.gep(pc, [builder.mul(ir.Constant(vk.type, i), vldc)])
            for v in range(vectors):
                builder.store(builder.load(sums[i][v]), vector_at(crow, v), align=context.get_abi_sizeof(dt))
        return context.get_dummy_value()
    return intrinsic(typer)


_tile_full, _tile_row = _tile(TILE_ROWS, TILE_VECTORS), _tile(1, TILE_VECTORS)
_tile_column, _tile_one = _tile(TILE_ROWS, 1), _tile(1, 1)


def _dot_tile(rows: int, cols: int):
    """An intrinsic (a, ao, lda, b, bo, ldb, c, co, ldc, k, more): the block c[co + i * ldc + j] = (c's
    value there if more, else 0) + the sum over p < k of a[ao + i * lda + p] * b[bo + j * ldb + p], for
    i < rows and j < cols, k a multiple of a vector register's lanes: the products of rows of a with rows
    of b (a @ b^T), each summed in a register over p, lanes added up at the end."""
    def typer(typingctx, a, ao, lda, b, bo, ldb, c, co, ldc, k, more):
        if not _gemm_operands(a, b, c):
            return None
        i = types.intp
        return types.void(a, i, i, b, i, i, c, i, i, i, types.boolean), codegen

    def codegen(context, builder, signature, args):
        a, b, c = signature.args[0], signature.args[3], signature.args[6]
        va, vao, vlda, vb, vbo, vldb, vc, vco, vldc, vk, vmore = args
        dt = context.get_value_type(a.dtype)
        size = context.get_abi_sizeof(dt)
        lanes = VECTOR_BYTES // size
        vec, idx = ir.VectorType(dt, lanes), vk.type
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fma.v{lanes}f{size * 8}")
        add = cgutils.get_or_insert_function(builder.module, ir.FunctionType(dt, [dt, vec]),
                                             f"llvm.vector.reduce.fadd.v{lanes}f{size * 8}")

        def row(arr, ty, off, stride, i):
            data = context.make_array(ty)(context, builder, value=arr).data
            return builder.gep(data, [builder.add(off, builder.mul(ir.Constant(idx, i), stride))])
        ar = [row(va, a, vao, vlda, i) for i in range(rows)]
        br = [row(vb, b, vbo, vldb, j) for j in range(cols)]
        zero = ir.Constant(vec, [ir.Constant(dt, 0.0)] * lanes)
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(cols)] for _ in range(rows)]
        with cgutils.for_range(builder, builder.udiv(vk, ir.Constant(idx, lanes))) as loop:
            p = builder.mul(loop.index, ir.Constant(idx, lanes))

            def load(start):
                return builder.load(builder.bitcast(builder.gep(start, [p]), vec.as_pointer()), align=size)
            bv = [load(r) for r in br]
            for i in range(rows):
                x = load(ar[i])
                for j in range(cols):
                    builder.store(builder.call(fma, [x, bv[j], builder.load(sums[i][j])]), sums[i][j])
        pc = context.make_array(c)(context, builder, value=vc).data
        for i in range(rows):
            for j in range(cols):
                at = builder.gep(pc, [builder.add(vco, builder.add(builder.mul(ir.Constant(idx, i), vldc),
                                                                    ir.Constant(idx, j)))])
                start = builder.select(vmore, builder.load(at), ir.Constant(dt, 0.0))
                total = builder.call(add, [start, builder.load(sums[i][j])], fastmath=("reassoc",))
                builder.store(total, at)
        return context.get_dummy_value()
    return intrinsic(typer)


_dot_full, _dot_row = _dot_tile(TILE_ROWS, TILE_ROWS), _dot_tile(1, TILE_ROWS)
_dot_column, _dot_one = _dot_tile(TILE_ROWS, 1), _dot_tile(1, 1)


gemm = _gemm_intrinsic(blas_only=False)
gemm.__doc__ = """gemm(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc): _gemm, called by its address.

Numba links a callee's code into each caller and compiles it there again: as a plain call _gemm's
blocks of vector code, inlined at every matmul and convolution, made LeNet-5's cold start 2 s longer.
Called through dlc_gemm_table it is compiled once per dtype (link_gemm), and a caller holds a call."""


@intrinsic
def _flat(typingctx, ptr, n):
    """The n elements at ptr as a 1-d array that owns nothing: numba's carray, but loading code that
    calls carray from numba's cache imports carray's module (numba.np.arrayobj, with numba's strings):
    0.05 s of a warm start."""
    if not isinstance(ptr, types.CPointer) or not isinstance(n, types.Integer):
        return None
    arrty = types.Array(ptr.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        ary = context.make_array(arrty)(context, builder)
        size = context.get_abi_sizeof(context.get_data_type(ptr.dtype))
        context.populate_array(ary, data=args[0], shape=[context.cast(builder, args[1], n, types.intp)],
                               strides=[context.get_constant(types.intp, size)], itemsize=size, meminfo=None)
        return ary._getvalue()
    return arrty(ptr, n), codegen


def _c_gemm(ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc):
    """_gemm on pointers (the C entry that link_gemm compiles)."""
    a = _flat(pa, (k if ta else m) * lda)
    b = _flat(pb, (n if tb else k) * ldb)
    c = _flat(pc, m * ldc)
    _gemm(ta, tb, m, n, k, a, 0, lda, b, 0, ldb, c, 0, ldc)


def link_gemm(dtype) -> None:
    """Put the machine code of _gemm for dtype (float32 or float64, numba's or numpy's) into
    dlc_gemm_table, compiled or from numba's cache, unless it is there. Code that calls gemm runs BLAS's
    gemm in its place until then (runtime/compiled.py links before a function's first call)."""
    from numba import from_dtype
    from numba.core import sigutils
    from numba.core.ccallback import CFunc
    dt = dtype if isinstance(dtype, types.Type) else from_dtype(np.dtype(dtype))
    if dt in _GEMM_LINKED:
        return
    i, p = types.int64, types.CPointer(dt)
    sig = sigutils.normalize_signature(types.void(i, i, i, i, i, p, i, p, i, p, i))
    f = CFunc(_c_gemm, sig, locals={}, options={"error_model": "numpy"})
    f.enable_caching()
    from .compiled import _guard_cache
    _guard_cache(f, Path(__file__), refresh=False)  # loading it needs no lowering (a warm start)
    f.compile()
    _GEMM_LINKED[dt] = f
    _GEMM_TABLE[_GEMM_DTYPES.index(dt)] = f.address


@njit(cache=True, error_model="numpy", inline="always")  # in its caller: k2 = 1 folds away in a product
def _tile_blocks(m, n, a, ao, si, sp, b, bo, ldb, c, co, ldc, k, more, k2, sa, sb):
    """The m x n block of c at co (n a multiple of a vector's lanes) in _tile's register blocks: 4 rows by
    TILE_VECTORS vectors, then the rows and vectors left one at a time. The arguments are _tile's."""
    lanes = VECTOR_BYTES // a.itemsize
    step = TILE_VECTORS * lanes
    j = 0
    while j < n:
        wide = n - j >= step
        i = 0
        while i < m:
            tall = m - i >= TILE_ROWS
            aij, bj, cij = ao + i * si, bo + j, co + i * ldc + j
            if tall and wide:
                _tile_full(a, aij, si, sp, b, bj, ldb, c, cij, ldc, k, more, k2, sa, sb)
            elif tall:
                _tile_column(a, aij, si, sp, b, bj, ldb, c, cij, ldc, k, more, k2, sa, sb)
            elif wide:
                _tile_row(a, aij, si, sp, b, bj, ldb, c, cij, ldc, k, more, k2, sa, sb)
            else:
                _tile_one(a, aij, si, sp, b, bj, ldb, c, cij, ldc, k, more, k2, sa, sb)
            i += TILE_ROWS if tall else 1
        j += step if wide else lanes


@njit(cache=True, error_model="numpy")
def _gemm(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc):
    """Row-major c[co:] (m x n, row stride ldc) = op(a[ao:]) (m x k) @ op(b[bo:]) (k x n), op transposing
    when ta / tb is true (a then holds k rows of stride lda).

    Where b's rows are contiguous, blocks of c of whole vector registers are summed in registers
    (_tile), without BLAS's packing of both operands into its own layout, which costs as much as the
    products themselves at a training step's sizes: an LSTM step's 32x128 @ 128x512 took 18 us against
    OpenBLAS's 54 (Haswell kernels) or 35 (AVX-512), LeNet-5's first convolution 6x25 @ 25x576 1.1
    against 6.2, MLP 784's 128x784 @ 784x256 270 against 530. A transposed b (a @ b^T: an input's
    gradient) is read along its rows (_gemm_nt), however long. The columns left over, both operands
    transposed and products narrower or shorter than a vector go to BLAS."""
    lanes = VECTOR_BYTES // a.itemsize
    if tb:
        # each block's sums are added across lanes at the end, and the products past the last whole
        # vector one by one: for few vectors (1600x65 @ 65x128) BLAS is twice as fast
        if ta or k < lanes or (k % lanes and k < 8 * lanes):
            _blas_gemm(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc)
        else:
            _gemm_nt(m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc, lanes)
        return
    full = n // lanes * lanes
    if full == 0:
        _blas_gemm(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc)
        return
    si, sp = (1, lda) if ta else (lda, 1)
    for p in range(0, max(k, 1), TILE_CHUNK):  # k = 0 still writes c's zeros
        _tile_blocks(m, full, a, ao + p * sp, si, sp, b, bo + p * ldb, ldb, c, co, ldc, min(TILE_CHUNK, k - p),
                     p > 0, 1, 0, 0)
    if full < n:
        _blas_gemm(ta, 0, m, n - full, k, a, ao, lda, b, bo + full, ldb, c, co + full, ldc)


@njit(cache=True, error_model="numpy", inline="always")
def _dot_blocks(m, n, a, ao, lda, b, bo, ldb, c, co, ldc, k, more):
    """The m x n block of c at co in _dot_tile's register blocks (rows of a by rows of b, 4 by 4, then
    the rows and columns left one at a time). The arguments are _dot_tile's."""
    j = 0
    while j < n:
        wide = n - j >= TILE_ROWS
        i = 0
        while i < m:
            tall = m - i >= TILE_ROWS
            ai, bj, cij = ao + i * lda, bo + j * ldb, co + i * ldc + j
            if tall and wide:
                _dot_full(a, ai, lda, b, bj, ldb, c, cij, ldc, k, more)
            elif tall:
                _dot_column(a, ai, lda, b, bj, ldb, c, cij, ldc, k, more)
            elif wide:
                _dot_row(a, ai, lda, b, bj, ldb, c, cij, ldc, k, more)
            else:
                _dot_one(a, ai, lda, b, bj, ldb, c, cij, ldc, k, more)
            i += TILE_ROWS if tall else 1
        j += TILE_ROWS if wide else 1


@njit(cache=True, error_model="numpy")
def _gemm_nt(m, n, k, a, ao, lda, b, bo, ldb, c, co, ldc, lanes):
    """gemm's a @ b^T, both read along their rows: register sums over whole vectors of p (_dot_tile),
    then the last k % lanes products one by one."""
    kv = k // lanes * lanes
    _dot_blocks(m, n, a, ao, lda, b, bo, ldb, c, co, ldc, kv, False)
    if kv < k:
        for i in range(m):
            for j in range(n):
                total = c[co + i * ldc + j]
                for p in range(kv, k):
                    total += a[ao + i * lda + p] * b[bo + j * ldb + p]
                c[co + i * ldc + j] = total


GRAIN = 8192  # the least work worth splitting: elements of an elementwise loop, multiply-adds / 8


@njit(cache=True, error_model="numpy")
def share(n, work, tid, nt, S):
    """Thread tid's part [lo, hi) of range(n) (n unsigned), for a loop of this much work: all of it for
    thread 0 when the work is under the team's grain S[3] (GRAIN; tests make it 1)."""
    if nt == 1 or work < S[3]:
        return np.uint64(0), (n if tid == 0 else np.uint64(0))
    t, m = np.uint64(tid), np.uint64(nt)
    return n * t // m, n * (t + np.uint64(1)) // m
