"""Evaluation metrics, one per entry of compiler.schema.METRICS, in plain NumPy.

    compute(name, y_true, y_pred, **hyper) -> float
    METRICS[name](y_true, y_pred, **hyper)      the implementations, keyed as compiler.schema.METRICS
    MetricError                                 bad arguments (unknown name or hyperparameter, shapes or
                                                values that do not fit the metric); a ValueError

Each implementation's keyword defaults are the schema's. A few take one more keyword that no `.dln` file
can set: `from_logits` (True/False; None, the default, guesses as below) and `pad` (bleu, wer).

Conventions. y_pred is what the model outputs; y_true is the target.

Classification, K classes: y_pred is [N, K] (or [N, T, K]; all leading axes are flattened into
examples) holding logits or probabilities; y_true is int class ids [N] (or [N, T]; [N, 1] also taken)
for the sparse_* metrics, one-hot (or any distribution) of y_pred's shape for the categorical_* ones.
  Logits or probabilities: y_pred is taken as probabilities when every value is in [0, 1] and every row
  sums to 1 (within 1e-3); otherwise as logits, and log-softmax is applied. Argmax and top-k metrics do
  not care (softmax keeps the order).

Binary and multi-label: y_pred is [N] (or [N, 1]) or [N, L], one score per label, and y_true 0/1 of the
same shape (the metrics pool all labels: micro-averaged). A 2-class output [N, 2] with y_true [N] is also
taken: class 1 is the positive one, its score p[:, 1] for probabilities or z[:, 1] - z[:, 0] for logits
(the logit of class 1 under softmax). With y_true also [N, 2] the pair is read as two labels instead.
  Logits or probabilities: y_pred is taken as probabilities when every value is in [0, 1], otherwise as
  logits, and the sigmoid is applied. A logit output that happens to lie wholly in [0, 1] (an untrained
  model on a small batch) is misread as probabilities: pass from_logits=True where it matters.
  An example is predicted positive when its probability is > threshold (strictly, as Keras).

accuracy chooses, like Keras' "accuracy": y_pred [..., K] with K > 1 and y_true [...] (or [..., 1]) ->
sparse categorical; same shapes, K > 1 and every y_true row one-hot -> categorical; otherwise binary at 0.5.
(A multi-label target that has exactly one label per example is thus scored as categorical; name
binary_accuracy to avoid that.) categorical accuracy takes the first maximum on ties.
top_k: the true class counts as found when fewer than k classes score strictly higher than it, so classes
tied at the k-th place all count (TensorFlow's in_top_k). y_true is ids, or one-hot of y_pred's shape.
precision, recall: TP / (TP + FP), TP / (TP + FN); 0.0 when the denominator is 0 (as Keras).
tp, tn, fp, fn: the counts, as floats.
auc: exact area under the ROC curve, the Mann-Whitney statistic with average ranks for ties (equal to
the trapezoid rule over every distinct threshold: a tied positive/negative pair counts 1/2). Scores are
ranked as given, logits without a sigmoid, so large logits do not saturate into false ties. `bins` is
accepted and ignored. nan when y_true holds a single class (the area is undefined).

Regression: y_true and y_pred have the same shape ([N] against [N, 1] is also taken; nothing else
broadcasts); the mean is over all elements.
  mse mean (y - p)^2; rmse sqrt(mse); mae mean |y - p|;
  mape 100 * mean |y - p| / max(|y|, 1e-7)   (the 1e-7 guards y = 0, as Keras);
  msle mean (log(1 + max(p, 1e-7)) - log(1 + max(y, 1e-7)))^2   (negatives clipped, as Keras).

Cross-entropies, mean over examples (and over labels for binary), natural log:
  binary_crossentropy  -(y log p + (1 - y) log(1 - p)); from logits z in the stable form
                       max(z, 0) - z y + log(1 + exp(-|z|)); probabilities clipped to [1e-7, 1 - 1e-7].
                       y_true may be soft labels in [0, 1].
  categorical_crossentropy  -sum_k y_k log p_k;  sparse_categorical_crossentropy  -log p_y.
                       From logits via log-softmax; probabilities clipped to [1e-7, 1].
  kl_divergence        sum_k y_k log(y_k / p_k) over the last axis, both clipped to [1e-7, 1] (as Keras);
                       y_true a distribution, y_pred probabilities (or logits, by the rule above, softmaxed).
  perplexity           exp(sparse_categorical_crossentropy) (categorical when y_true is one-hot of
                       y_pred's shape). No padding is masked.

Sequences (bleu, wer): y_true and y_pred are corpora of N token sequences, given as
  - a list whose items are lists/tuples of tokens (ints or strs), 1-D arrays, or strings (split on
    whitespace);
  - an int array [N, T] (one sequence a row), or for y_pred a float array [N, T, V] of per-token scores,
    reduced by argmax.
  Every occurrence of the pad id `pad` (default 0; None keeps all) is removed from sequences given as
  NumPy arrays; Python lists are taken verbatim.
  bleu: an item of y_true may instead be a list of several references, each a token list or array
  (not a string). Corpus BLEU of Papineni et al. (2002): modified n-gram precisions p_1..p_n, with
  each candidate n-gram count clipped by its largest count in any one reference, summed over the corpus;
  uniform weights; brevity penalty BP = 1 if c > r else exp(1 - r/c), c the total candidate length, r the
  sum of the reference lengths closest to each candidate's (the shorter on a tie). BLEU = BP *
  exp(mean log p_m), in [0, 1] (not x100); 0 when any p_m is 0 (no smoothing, as the paper).
  wer: sum of word-level Levenshtein distances (substitutions + deletions + insertions) over the sum of
  reference lengths, over the corpus; one reference per example; may exceed 1.
"""
from __future__ import annotations

import inspect
import math
from collections import Counter
from typing import Callable

import numpy as np

EPS = 1e-7          # clipping and division guard (Keras' backend epsilon)
_ROW_SUM_ATOL = 1e-3  # float32 softmax rows, and hand-written ones like [0.2, 0.3, 0.5], pass


class MetricError(ValueError):
    """Arguments that do not fit a metric: unknown name or hyperparameter, bad shapes or values."""


# ---------------------------------------------------------------- input normalization

def _array(x, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise MetricError(f"{what} is not an array: {e}") from None
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise MetricError(f"{what} must be numeric, got dtype {a.dtype}")
    if a.size == 0:
        raise MetricError(f"{what} is empty")
    return a


def _floats(x, what: str) -> np.ndarray:
    return _array(x, what).astype(np.float64)


def _looks_prob(p: np.ndarray) -> bool:
    return bool(np.all((p >= 0) & (p <= 1)))


def _looks_dist(p: np.ndarray) -> bool:
    return _looks_prob(p) and bool(np.all(np.abs(p.sum(axis=-1) - 1) <= _ROW_SUM_ATOL))


def _guess(from_logits, looks_prob: bool) -> bool:
    return (not looks_prob) if from_logits is None else bool(from_logits)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


def _log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _log_probs(p: np.ndarray, from_logits) -> np.ndarray:
    if _guess(from_logits, _looks_dist(p)):
        return _log_softmax(p)
    return np.log(np.clip(p, EPS, 1.0))


def _class_ids(t: np.ndarray, k: int) -> np.ndarray:
    if t.dtype != np.bool_ and not np.issubdtype(t.dtype, np.integer):
        if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
            raise MetricError("y_true must hold integer class ids")
    ids = t.astype(np.int64)
    if ids.min() < 0 or ids.max() >= k:
        raise MetricError(f"class ids must be in [0, {k}), got values in [{ids.min()}, {ids.max()}]")
    return ids


def _sparse(y_true, y_pred):
    """-> (ids [M], scores [M, K])"""
    t, p = _array(y_true, "y_true"), _floats(y_pred, "y_pred")
    if p.ndim >= 2 and t.ndim == p.ndim and t.shape == p.shape[:-1] + (1,):
        t = t[..., 0]
    if p.ndim < 2 or t.shape != p.shape[:-1]:
        raise MetricError(f"y_true must be class ids of shape {p.shape[:-1]} for y_pred of shape {p.shape} "
                          f"(y_pred [N, K] or [N, T, K]); got y_true of shape {t.shape}"
                          + ("; for one-hot targets use the categorical_* metric" if t.shape == p.shape else ""))
    k = p.shape[-1]
    return _class_ids(t, k).reshape(-1), p.reshape(-1, k)


def _categorical(y_true, y_pred):
    """-> (targets [M, K], scores [M, K])"""
    t, p = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    if p.ndim < 2 or t.shape != p.shape:
        raise MetricError(f"y_true must be one-hot of y_pred's shape {p.shape} (y_pred [N, K] or [N, T, K]); "
                          f"got y_true of shape {t.shape}"
                          + ("; for class ids use the sparse_categorical_* metric" if p.ndim >= 2 and t.shape == p.shape[:-1] else ""))
    if np.any(t < 0):
        raise MetricError("y_true must be one-hot (or a distribution): it has negative values")
    k = p.shape[-1]
    return t.reshape(-1, k), p.reshape(-1, k)


def _binary(y_true, y_pred, from_logits):
    """-> (targets [M], scores [M], whether the scores are logits)"""
    t, p = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    if p.ndim == t.ndim + 1 and p.shape[:-1] == t.shape and p.shape[-1] in (1, 2):
        if p.shape[-1] == 2:
            logits = _guess(from_logits, _looks_dist(p))
            s = p[..., 1] - p[..., 0] if logits else p[..., 1]
            return t.reshape(-1), s.reshape(-1), logits
        p = p[..., 0]
    elif t.ndim == p.ndim + 1 and t.shape == p.shape + (1,):
        t = t[..., 0]
    if t.shape != p.shape:
        raise MetricError(f"binary metrics need y_true and y_pred of the same shape ([N] or [N, L]), or y_pred "
                          f"[N, 2] with y_true [N]; got y_true {t.shape}, y_pred {p.shape}")
    return t.reshape(-1), p.reshape(-1), _guess(from_logits, _looks_prob(p))


def _hard_labels(t: np.ndarray) -> np.ndarray:
    if not np.all((t == 0) | (t == 1)):
        raise MetricError("y_true must be 0/1 labels")
    return t.astype(bool)


def _regression(y_true, y_pred):
    t, p = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    # [N] against [N, 1] is a common mismatch; anything else would broadcast into a wrong answer ([N, N])
    if p.ndim == t.ndim + 1 and p.shape == t.shape + (1,):
        p = p[..., 0]
    elif t.ndim == p.ndim + 1 and t.shape == p.shape + (1,):
        t = t[..., 0]
    if t.shape != p.shape:
        raise MetricError(f"y_true and y_pred must have the same shape; got {t.shape} and {p.shape}")
    return t, p


def _check_int(name: str, v, low: int) -> int:
    # the front end lets a float stand where the schema's default is an int: take 2.0 as 2
    if (isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v)
            or v != int(v) or v < low):
        raise MetricError(f"`{name}` must be an integer >= {low}, got {v!r}")
    return int(v)


def _check_threshold(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
        raise MetricError(f"`threshold` must be a finite number, got {v!r}")
    return float(v)


# ---------------------------------------------------------------- classification

def binary_accuracy(y_true, y_pred, threshold=0.5, from_logits=None):
    t, s, logits = _binary(y_true, y_pred, from_logits)
    t = _hard_labels(t)
    prob = _sigmoid(s) if logits else s
    return float(np.mean((prob > _check_threshold(threshold)) == t))


def sparse_categorical_accuracy(y_true, y_pred):
    ids, p = _sparse(y_true, y_pred)
    return float(np.mean(np.argmax(p, axis=-1) == ids))


def categorical_accuracy(y_true, y_pred):
    t, p = _categorical(y_true, y_pred)
    return float(np.mean(np.argmax(p, axis=-1) == np.argmax(t, axis=-1)))


def _is_one_hot(t: np.ndarray) -> bool:
    return bool(np.all((t == 0) | (t == 1)) and np.all(t.sum(axis=-1) == 1))


def accuracy(y_true, y_pred, from_logits=None):
    t, p = _array(y_true, "y_true"), _array(y_pred, "y_pred")
    if p.ndim >= 2 and p.shape[-1] > 1 and t.shape in (p.shape[:-1], p.shape[:-1] + (1,)):
        return sparse_categorical_accuracy(t, p)
    if p.ndim >= 2 and t.shape == p.shape and p.shape[-1] > 1 and _is_one_hot(t):
        return categorical_accuracy(t, p)
    return binary_accuracy(t, p, 0.5, from_logits)


def top_k(y_true, y_pred, k=5):
    k = _check_int("k", k, 1)
    t, p = _array(y_true, "y_true"), _floats(y_pred, "y_pred")
    if p.ndim >= 2 and t.shape == p.shape:
        ids, p = np.argmax(t, axis=-1).reshape(-1), p.reshape(-1, p.shape[-1])
    else:
        ids, p = _sparse(t, p)
    true_score = p[np.arange(len(ids)), ids]
    higher = np.sum(p > true_score[:, None], axis=-1)
    return float(np.mean(higher < k))


def _confusion(y_true, y_pred, threshold, from_logits):
    t, s, logits = _binary(y_true, y_pred, from_logits)
    t = _hard_labels(t)
    pos = (_sigmoid(s) if logits else s) > _check_threshold(threshold)
    return (int(np.sum(pos & t)), int(np.sum(~pos & ~t)), int(np.sum(pos & ~t)), int(np.sum(~pos & t)))


def tp(y_true, y_pred, threshold=0.5, from_logits=None):
    return float(_confusion(y_true, y_pred, threshold, from_logits)[0])


def tn(y_true, y_pred, threshold=0.5, from_logits=None):
    return float(_confusion(y_true, y_pred, threshold, from_logits)[1])


def fp(y_true, y_pred, threshold=0.5, from_logits=None):
    return float(_confusion(y_true, y_pred, threshold, from_logits)[2])


def fn(y_true, y_pred, threshold=0.5, from_logits=None):
    return float(_confusion(y_true, y_pred, threshold, from_logits)[3])


def precision(y_true, y_pred, threshold=0.5, from_logits=None):
    tp_, _, fp_, _ = _confusion(y_true, y_pred, threshold, from_logits)
    return tp_ / (tp_ + fp_) if tp_ + fp_ else 0.0


def recall(y_true, y_pred, threshold=0.5, from_logits=None):
    tp_, _, _, fn_ = _confusion(y_true, y_pred, threshold, from_logits)
    return tp_ / (tp_ + fn_) if tp_ + fn_ else 0.0


def auc(y_true, y_pred, bins=200, from_logits=None):
    _check_int("bins", bins, 1)  # accepted for the schema; the area is exact
    t, s, _ = _binary(y_true, y_pred, from_logits)
    t = _hard_labels(t)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based position of each distinct score's first occurrence
    ranks = (first + (counts + 1) / 2.0)[inverse.reshape(-1)]  # 1-based average ranks
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ---------------------------------------------------------------- regression

def mse(y_true, y_pred):
    t, p = _regression(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def rmse(y_true, y_pred):
    return math.sqrt(mse(y_true, y_pred))


def mae(y_true, y_pred):
    t, p = _regression(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def mape(y_true, y_pred):
    t, p = _regression(y_true, y_pred)
    return float(100.0 * np.mean(np.abs(t - p) / np.maximum(np.abs(t), EPS)))


def msle(y_true, y_pred):
    t, p = _regression(y_true, y_pred)
    return float(np.mean((np.log1p(np.maximum(p, EPS)) - np.log1p(np.maximum(t, EPS))) ** 2))


# ---------------------------------------------------------------- cross-entropies

def binary_crossentropy(y_true, y_pred, from_logits=None):
    t, s, logits = _binary(y_true, y_pred, from_logits)
    if np.any((t < 0) | (t > 1)):
        raise MetricError("y_true must be labels in [0, 1]")
    if logits:
        loss = np.maximum(s, 0) - s * t + np.log1p(np.exp(-np.abs(s)))
    else:
        q = np.clip(s, EPS, 1 - EPS)
        loss = -(t * np.log(q) + (1 - t) * np.log(1 - q))
    return float(np.mean(loss))


def categorical_crossentropy(y_true, y_pred, from_logits=None):
    t, p = _categorical(y_true, y_pred)
    return float(np.mean(-np.sum(t * _log_probs(p, from_logits), axis=-1)))


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=None):
    ids, p = _sparse(y_true, y_pred)
    return float(np.mean(-_log_probs(p, from_logits)[np.arange(len(ids)), ids]))


def kl_divergence(y_true, y_pred, from_logits=None):
    t, p = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    if t.shape != p.shape:
        raise MetricError(f"y_true and y_pred must be distributions of the same shape; got {t.shape} and {p.shape}")
    if not _looks_prob(t):
        raise MetricError("y_true must be a probability distribution (values in [0, 1])")
    if _guess(from_logits, _looks_dist(p)):
        p = np.exp(_log_softmax(p))
    t, p = np.clip(t, EPS, 1.0), np.clip(p, EPS, 1.0)
    return float(np.mean(np.sum(t * np.log(t / p), axis=-1)))


def perplexity(y_true, y_pred, from_logits=None):
    t, p = _array(y_true, "y_true"), _array(y_pred, "y_pred")
    if p.ndim >= 2 and t.shape == p.shape:
        return math.exp(categorical_crossentropy(t, p, from_logits))
    return math.exp(sparse_categorical_crossentropy(t, p, from_logits))


# ---------------------------------------------------------------- sequences

def _token(x):
    if isinstance(x, (str, np.str_)):
        return str(x)
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise MetricError(f"tokens must be ints or strings, got {x!r}")
    return int(x)


def _array_seq(a: np.ndarray, pad) -> list:
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise MetricError("a token sequence given as a float array must hold integer ids")
        a = a.astype(np.int64)
    if a.dtype.kind in "iu" and pad is not None:
        a = a[a != pad]
    return [_token(x) for x in a.tolist()]


def _sequence(x, pad) -> list:
    if isinstance(x, (str, np.str_)):
        return str(x).split()
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise MetricError(f"a token sequence must be 1-D, got an array of shape {x.shape}")
        return _array_seq(x, pad)
    if isinstance(x, (list, tuple)):
        return [_token(tok) for tok in x]
    raise MetricError(f"a token sequence must be a list, a 1-D array or a string, got {type(x).__name__}")


def _corpus(y, pad, what: str, multi: bool) -> list:
    """-> one list of reference token lists per example when `multi`, else one token list per example."""
    if isinstance(y, np.ndarray) and y.dtype != object:
        if y.ndim == 3 and y.dtype.kind == "f":
            y = np.argmax(y, axis=-1)  # per-token scores [N, T, V] -> ids
        if y.ndim != 2:
            raise MetricError(f"{what} as an array must be token ids [N, T] (or scores [N, T, V]), "
                              f"got shape {y.shape}")
        seqs = [_array_seq(row, pad) for row in y]
        return [[s] for s in seqs] if multi else seqs
    if not isinstance(y, (list, tuple, np.ndarray)):
        raise MetricError(f"{what} must be a list of token sequences or an array [N, T], got {type(y).__name__}")
    out = []
    for item in y:
        nested = isinstance(item, (list, tuple)) and len(item) > 0 and all(
            isinstance(r, (list, tuple, np.ndarray)) for r in item)
        if nested and not multi:
            raise MetricError(f"{what}: an item is a list of sequences; this metric takes one sequence per example")
        out.append([_sequence(r, pad) for r in item] if nested else
                   ([_sequence(item, pad)] if multi else _sequence(item, pad)))
    if not out:
        raise MetricError(f"{what} is empty")
    return out


def _ngrams(seq: list, m: int) -> Counter:
    return Counter(tuple(seq[i:i + m]) for i in range(len(seq) - m + 1))


def bleu(y_true, y_pred, n=4, pad=0):
    n = _check_int("n", n, 1)
    refs = _corpus(y_true, pad, "y_true", multi=True)
    cands = _corpus(y_pred, pad, "y_pred", multi=False)
    if len(refs) != len(cands):
        raise MetricError(f"{len(refs)} references for {len(cands)} candidates")
    clipped, total = [0] * n, [0] * n
    c = r = 0
    for cand, rs in zip(cands, refs):
        c += len(cand)
        r += min((abs(len(x) - len(cand)), len(x)) for x in rs)[1]
        for m in range(1, n + 1):
            counts = _ngrams(cand, m)
            most = Counter()
            for x in rs:
                most |= _ngrams(x, m)  # Counter union keeps the maximum count of each n-gram
            clipped[m - 1] += sum(min(k, most[g]) for g, k in counts.items())
            total[m - 1] += sum(counts.values())
    if c == 0 or min(clipped) == 0:
        return 0.0
    log_p = sum(math.log(cl / tot) for cl, tot in zip(clipped, total)) / n
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(log_p)


def _levenshtein(ref: list, hyp: list) -> int:
    vocab: dict = {}
    a = np.array([vocab.setdefault(x, len(vocab)) for x in ref], dtype=np.int64)
    b = [vocab.setdefault(x, len(vocab)) for x in hyp]
    j = np.arange(len(a) + 1)
    row = j.copy()  # distance from the empty hypothesis prefix: len(ref prefix) deletions
    for i, tok in enumerate(b, 1):
        best = np.empty_like(row)
        best[0] = i
        best[1:] = np.minimum(row[1:] + 1, row[:-1] + (a != tok))  # insertion, substitution/match
        # deletions chain along the row: d[j] = min_k (best[k] + j - k), a running minimum of best[k] - k
        row = np.minimum.accumulate(best - j) + j
    return int(row[-1])


def wer(y_true, y_pred, pad=0):
    refs = _corpus(y_true, pad, "y_true", multi=False)
    hyps = _corpus(y_pred, pad, "y_pred", multi=False)
    if len(refs) != len(hyps):
        raise MetricError(f"{len(refs)} references for {len(hyps)} hypotheses")
    words = sum(len(x) for x in refs)
    if words == 0:
        raise MetricError("the references have no words: the word error rate is undefined")
    return sum(_levenshtein(x, h) for x, h in zip(refs, hyps)) / words


# ---------------------------------------------------------------- the table

METRICS: dict[str, Callable] = {
    "accuracy": accuracy, "binary_accuracy": binary_accuracy, "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy, "top_k": top_k,
    "precision": precision, "recall": recall, "auc": auc, "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    "mse": mse, "rmse": rmse, "mae": mae, "mape": mape, "msle": msle,
    "binary_crossentropy": binary_crossentropy, "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "kl_divergence": kl_divergence, "bleu": bleu, "wer": wer, "perplexity": perplexity,
}

_HYPER = {name: set(list(inspect.signature(f).parameters)[2:]) for name, f in METRICS.items()}


def compute(name: str, y_true, y_pred, **hyper) -> float:
    """The metric `name` of compiler.schema.METRICS on (y_true, y_pred); see the module docstring."""
    f = METRICS.get(name)
    if f is None:
        raise MetricError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    unknown = sorted(set(hyper) - _HYPER[name])
    if unknown:
        raise MetricError(f"{name}: unknown hyperparameter {', '.join(unknown)}; "
                          f"it takes {', '.join(sorted(_HYPER[name])) or 'none'}")
    try:
        return float(f(y_true, y_pred, **hyper))
    except MetricError as e:
        raise MetricError(f"{name}: {e}") from None
