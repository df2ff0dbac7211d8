"""runtime.metrics against values worked out by hand (in the comments), not against the module itself."""
import inspect
import math

import numpy as np
import pytest

from compiler import schema
from runtime import metrics
from runtime.metrics import METRICS, MetricError, compute


def logit(p):
    p = np.asarray(p, dtype=float)
    return np.log(p / (1 - p))


def sig(z):
    return 1 / (1 + math.exp(-z))


# ---------------------------------------------------------------- the table

# One input each metric accepts, to run every entry at the schema's defaults.
_CLS = (np.array([0, 2, 1]), np.array([[2.0, 1.0, 0.1], [0.5, 0.2, 3.0], [0.3, 0.2, 0.1]]))
_ONE_HOT = (np.eye(3)[[0, 2, 1]], _CLS[1])
_BIN = (np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]))
_REG = (np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.0]))
_SEQ = (["the cat sat on the mat"], ["the cat sat on a mat"])
SAMPLES = {
    "accuracy": _CLS, "binary_accuracy": _BIN, "categorical_accuracy": _ONE_HOT,
    "sparse_categorical_accuracy": _CLS, "top_k": _CLS,
    "precision": _BIN, "recall": _BIN, "auc": _BIN, "tp": _BIN, "tn": _BIN, "fp": _BIN, "fn": _BIN,
    "mse": _REG, "rmse": _REG, "mae": _REG, "mape": _REG, "msle": _REG,
    "binary_crossentropy": _BIN, "categorical_crossentropy": _ONE_HOT, "sparse_categorical_crossentropy": _CLS,
    "kl_divergence": (np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])), "bleu": _SEQ, "wer": _SEQ,
    "perplexity": _CLS,
}


def test_every_schema_metric_is_implemented_with_the_schema_defaults():
    assert set(METRICS) == set(schema.METRICS) == set(SAMPLES)
    for name, hyper in schema.METRICS.items():
        params = inspect.signature(METRICS[name]).parameters
        for h, default in hyper.items():
            assert params[h].default == default, (name, h)
        value = compute(name, *SAMPLES[name])
        assert isinstance(value, float) and math.isfinite(value), name
        assert compute(name, *SAMPLES[name], **hyper) == value  # explicit defaults change nothing


# ---------------------------------------------------------------- binary

# y_true 1 0 0 1 0, p 0.9 0.8 0.7 0.2 0.1; at 0.5 predicted 1 1 1 0 0:
# TP = 1 (ex 0), FP = 2 (ex 1, 2), FN = 1 (ex 3), TN = 1 (ex 4); precision 1/3, recall 1/2, accuracy 2/5.
Y = np.array([1, 0, 0, 1, 0])
P = np.array([0.9, 0.8, 0.7, 0.2, 0.1])


@pytest.mark.parametrize("y_pred", [
    P,                                     # probabilities
    P[:, None],                            # [N, 1]
    logit(P),                              # logits (values outside [0, 1])
    np.stack([1 - P, P], axis=1),          # 2-class probabilities, class 1 positive
    np.stack([np.full(5, 0.3), 0.3 + logit(P)], axis=1),  # 2-class logits: z1 - z0 = logit(p)
], ids=["prob", "prob_n1", "logit", "two_class_prob", "two_class_logit"])
def test_confusion_counts_precision_recall(y_pred):
    assert [compute(m, Y, y_pred) for m in ("tp", "fp", "fn", "tn")] == [1.0, 2.0, 1.0, 1.0]
    assert compute("precision", Y, y_pred) == pytest.approx(1 / 3)
    assert compute("recall", Y, y_pred) == pytest.approx(1 / 2)
    assert compute("binary_accuracy", Y, y_pred) == pytest.approx(2 / 5)


def test_threshold_is_strict_and_settable():
    # at 0.75 predicted 1 1 0 0 0: TP 1, FP 1, FN 1, TN 2
    assert compute("precision", Y, P, threshold=0.75) == pytest.approx(1 / 2)
    assert compute("tn", Y, P, threshold=0.75) == 2.0
    assert compute("tp", [1], [0.5]) == 0.0  # 0.5 is not > 0.5
    assert compute("precision", [1, 0], [0.1, 0.2]) == 0.0  # no predicted positives: 0, not nan
    assert compute("recall", [0, 0], [0.9, 0.2]) == 0.0


def test_from_logits_overrides_the_guess():
    # scores all in [0, 1] read as probabilities: 0.2 -> negative; as logits sigmoid(0.2) = 0.55 -> positive
    assert compute("tp", [1, 1], [0.2, 0.9]) == 1.0
    assert compute("tp", [1, 1], [0.2, 0.9], from_logits=True) == 2.0


def test_multilabel_pools_all_labels():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    p = np.array([[0.8, 0.6, 0.4], [0.1, 0.9, 0.2]])
    # predicted [[1 1 0], [0 1 0]]: TP 2, FP 1, FN 1, TN 2; accuracy 4/6
    assert compute("precision", y, p) == pytest.approx(2 / 3)
    assert compute("binary_accuracy", y, p) == pytest.approx(4 / 6)
    assert compute("accuracy", y, p) == pytest.approx(4 / 6)  # multi-hot rows: binary, not categorical


# ---------------------------------------------------------------- AUC

def test_auc_without_ties():
    # positives 0.35, 0.8; negatives 0.1, 0.4. Pairs positive > negative: (.35,.1) (.8,.1) (.8,.4) = 3 of 4.
    assert compute("auc", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_with_ties():
    # positives 0.5, 0.8; negatives 0.5, 0.5. Pairs: (.5,.5) (.5,.5) tie -> 1/2 each, (.8,.5) (.8,.5) -> 1
    # each: 3 of 4. Trapezoid: ROC goes (0,0) -> (0,1/2) at 0.8 -> diagonally to (1,1) at 0.5: 1/2 + 1/4.
    assert compute("auc", [0, 0, 1, 1], [0.5, 0.5, 0.5, 0.8]) == pytest.approx(0.75)
    assert compute("auc", [0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert compute("auc", [1, 0, 1], [0.9, 0.1, 0.2], bins=7) == pytest.approx(1.0)  # bins ignored


def test_auc_ranks_logits_without_saturating():
    # sigmoid(100) and sigmoid(101) are both 1.0 in float64; the ranking must still separate them
    z = np.array([[0.0, 100.0], [0.0, 101.0], [0.0, -3.0]])
    assert compute("auc", [0, 1, 0], z) == pytest.approx(1.0)
    assert math.isnan(compute("auc", [1, 1], [0.2, 0.4]))  # one class only: undefined


# ---------------------------------------------------------------- categorical accuracy, top-k

def test_accuracy_picks_the_kind():
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    ids = np.array([1, 2, 2, 0])  # argmax 1 0 2 1: right, wrong, right, wrong
    assert compute("accuracy", ids, p) == 0.5
    assert compute("accuracy", ids[:, None], p) == 0.5
    assert compute("sparse_categorical_accuracy", ids, p) == 0.5
    assert compute("accuracy", np.eye(3)[ids], p) == 0.5
    assert compute("categorical_accuracy", np.eye(3)[ids], np.log(p)) == 0.5
    assert compute("accuracy", [1, 0, 1], [0.7, 0.4, 0.2]) == pytest.approx(2 / 3)  # binary at 0.5
    # sequences [N, T, K] with ids [N, T]: all positions pooled
    assert compute("accuracy", ids.reshape(2, 2), p.reshape(2, 2, 3)) == 0.5


def test_top_k():
    p = np.array([[0.1, 0.2, 0.3, 0.4],       # true 0: 3 classes higher
                  [0.4, 0.3, 0.2, 0.1],       # true 1: 1 higher
                  [0.25, 0.25, 0.25, 0.25]])  # true 3: none strictly higher (ties count as found)
    y = np.array([0, 1, 3])
    assert [compute("top_k", y, p, k=k) for k in (1, 2, 3, 4)] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1])
    assert compute("top_k", y, p) == 1.0  # default k = 5 >= 4 classes
    assert compute("top_k", np.eye(4)[y], p, k=2) == pytest.approx(2 / 3)  # one-hot targets
    assert compute("top_k", y, p, k=2.0) == pytest.approx(2 / 3)  # the front end lets 2.0 stand for 2


# ---------------------------------------------------------------- cross-entropies

def test_sparse_and_categorical_crossentropy():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    want = -(math.log(0.7) + math.log(0.8)) / 2
    assert compute("sparse_categorical_crossentropy", [0, 2], p) == pytest.approx(want)
    assert compute("categorical_crossentropy", np.eye(3)[[0, 2]], p) == pytest.approx(want)
    # logits: -log softmax(z)_y = logsumexp(z) - z_y
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    e = math.e
    want = ((math.log(e + e ** 2 + e ** 3) - 3) + math.log(3)) / 2
    assert compute("sparse_categorical_crossentropy", [2, 1], z) == pytest.approx(want)
    assert compute("categorical_crossentropy", np.eye(3)[[2, 1]], z) == pytest.approx(want)
    assert compute("perplexity", [2, 1], z) == pytest.approx(math.exp(want))
    # stable: log-softmax of [1000, 0] at class 1 is -1000
    assert compute("sparse_categorical_crossentropy", [1], [[1000.0, 0.0]]) == pytest.approx(1000.0)


def test_perplexity_of_uniform_predictions_is_the_vocabulary_size():
    assert compute("perplexity", np.zeros((2, 5), int), np.zeros((2, 5, 7))) == pytest.approx(7.0)


def test_binary_crossentropy():
    want = -(math.log(0.8) + math.log(0.7)) / 2
    assert compute("binary_crossentropy", [1, 0], [0.8, 0.3]) == pytest.approx(want)
    # logits 2, -1: -(log sigmoid(2) + log(1 - sigmoid(-1))) / 2
    want = -(math.log(sig(2)) + math.log(1 - sig(-1))) / 2
    assert compute("binary_crossentropy", [1, 0], [2.0, -1.0]) == pytest.approx(want)
    assert compute("binary_crossentropy", [1], [-1000.0]) == pytest.approx(1000.0)
    # soft labels: -(0.25 log 0.5 + 0.75 log 0.5) = log 2
    assert compute("binary_crossentropy", [0.25], [0.5]) == pytest.approx(math.log(2))


def test_kl_divergence():
    # 0.5 log(0.5 / 0.25) + 0.5 log(0.5 / 0.75)
    want = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert compute("kl_divergence", [[0.5, 0.5]], [[0.25, 0.75]]) == pytest.approx(want)
    assert compute("kl_divergence", [[0.5, 0.5]], [[0.0, math.log(3)]]) == pytest.approx(want)  # logits
    assert compute("kl_divergence", [[0.2, 0.8]], [[0.2, 0.8]]) == pytest.approx(0.0)


# ---------------------------------------------------------------- regression

def test_regression():
    y, p = [1.0, 2.0, 0.0, 4.0], [2.0, 2.0, 1.0, 2.0]  # errors -1 0 -1 2
    assert compute("mse", y, p) == pytest.approx((1 + 0 + 1 + 4) / 4)
    assert compute("rmse", y, p) == pytest.approx(math.sqrt(1.5))
    assert compute("mae", y, p) == pytest.approx((1 + 0 + 1 + 2) / 4)
    assert compute("mse", np.array(y), np.array(p)[:, None]) == pytest.approx(1.5)  # [N] vs [N, 1]
    assert compute("mape", [1.0, 2.0, 4.0], [2.0, 2.0, 3.0]) == pytest.approx(100 * (1 + 0 + 1 / 4) / 3)
    assert compute("mape", [0.0], [1e-7]) == pytest.approx(100.0)  # |y| guarded by 1e-7
    # log(1 + (e - 1)) = 1 against log(1 + 0) = 0, and an exact match: (1 + 0) / 2
    assert compute("msle", [0.0, math.e - 1], [math.e - 1, math.e - 1]) == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------- BLEU

# Papineni et al. 2002, example 1 (lower-cased, punctuation dropped)
CAND1 = "it is a guide to action which ensures that the military always obeys the commands of the party"
REFS1 = ["it is a guide to action that ensures that the military will forever heed party commands",
         "it is the guiding principle which guarantees the military forces always being under the command of the party",
         "it is the practical guide for the army always to heed the directions of the party"]


def test_bleu_papineni_example():
    refs = [[r.split() for r in REFS1]]
    # the paper: modified unigram precision 17/18 (only "obeys" unmatched; "the" x3 clipped at 3, within
    # the 4 of reference 3), bigram 10/17. c = 18; reference lengths 16, 18, 16: r = 18, so BP = 1.
    assert compute("bleu", refs, [CAND1], n=1) == pytest.approx(17 / 18)
    assert compute("bleu", refs, [CAND1], n=2) == pytest.approx(math.sqrt(17 / 18 * 10 / 17))


def test_bleu_clipping():
    # the paper's "the the the the the the the": 7 unigrams, "the" clipped to 2 (reference 1 has it twice).
    # c = 7, reference lengths 6 and 7: r = 7, BP = 1.
    refs = [["the cat is on the mat".split(), "there is a cat on the mat".split()]]
    assert compute("bleu", refs, ["the the the the the the the"], n=1) == pytest.approx(2 / 7)
    assert compute("bleu", refs, ["the the the the the the the"], n=2) == 0.0  # no bigram matches


def test_bleu_brevity_penalty_and_corpus_sums():
    # "the cat sat" against "the cat sat on the mat": p1 = 3/3, p2 = 2/2, c = 3, r = 6: BP = exp(1 - 6/3)
    assert compute("bleu", ["the cat sat on the mat"], ["the cat sat"], n=2) == pytest.approx(math.exp(-1))
    # corpus: ("a b c d" vs "a b c d") + ("a b" vs "a x"): unigrams 4 + 1 of 6, bigrams 3 + 0 of 4, c = r = 6;
    # BLEU-2 = sqrt(5/6 * 3/4), not the mean of the sentence scores (1 and 0)
    assert compute("bleu", ["a b c d", "a b"], ["a b c d", "a x"], n=2) == pytest.approx(math.sqrt(5 / 6 * 3 / 4))


def test_bleu_on_id_arrays_strips_padding():
    y = np.array([[5, 6, 7, 8, 0, 0], [9, 9, 0, 0, 0, 0]])
    assert compute("bleu", y, y, n=2) == pytest.approx(1.0)
    # per-token scores [N, T, V] are reduced by argmax
    scores = np.eye(10)[y] * 3.0
    assert compute("bleu", y, scores, n=2) == pytest.approx(1.0)
    # Python lists keep their zeros: precisions 6/6 and 4/4, but r = 6 + 6 against c = 4 + 2
    assert compute("bleu", y.tolist(), [[5, 6, 7, 8], [9, 9]], n=2) == pytest.approx(math.exp(1 - 12 / 6))


# ---------------------------------------------------------------- WER

def test_wer():
    ref = "the cat sat on the mat"
    assert compute("wer", [ref], ["the cat sat"]) == pytest.approx(3 / 6)          # 3 deletions
    assert compute("wer", ["the cat sat"], [ref]) == pytest.approx(3 / 3)          # 3 insertions
    assert compute("wer", [ref], ["the cat sit on mat"]) == pytest.approx(2 / 6)   # sat->sit, "the" deleted
    # corpus: 0 + ("a b" -> "x y z": 2 substitutions, 1 insertion) over 6 + 2 words
    assert compute("wer", [ref, "a b"], [ref, "x y z"]) == pytest.approx(3 / 8)
    assert compute("wer", [list("kitten")], [list("sitting")]) == pytest.approx(3 / 6)  # the classic 3
    # ids with padding: (1 deletion) + (1 substitution, 1 insertion) over 3 + 2 words
    assert compute("wer", np.array([[3, 4, 5, 0], [6, 7, 0, 0]]),
                   np.array([[3, 4, 0, 0], [6, 8, 9, 0]])) == pytest.approx(3 / 5)


# ---------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("name, y_true, y_pred, hyper", [
    ("no_such_metric", [1], [1], {}),
    ("precision", [1, 0], [0.2, 0.3], {"k": 3}),                       # not its hyperparameter
    ("top_k", [0, 1], [[0.2, 0.8], [0.4, 0.6]], {"k": 0}),
    ("top_k", [0, 1], [[0.2, 0.8], [0.4, 0.6]], {"k": 1.5}),
    ("sparse_categorical_accuracy", [0, 1, 2, 1], np.ones((3, 4)) / 4, {}),   # 4 ids for 3 rows
    ("sparse_categorical_crossentropy", [0, 3], np.ones((2, 3)) / 3, {}),  # id 3 of 3 classes
    ("categorical_accuracy", [0, 1], np.ones((2, 3)) / 3, {}),         # ids where one-hot is needed
    ("precision", [1, 0, 1], [0.2, 0.3, 0.9, 0.1], {}),
    ("tp", [2, 0], [0.2, 0.9], {}),                                    # not 0/1 labels
    ("mse", [1.0, 2.0, 3.0], np.ones((3, 2)), {}),                     # would broadcast
    ("top_k", [0, 1], [0.2, 0.8], {}),
    ("kl_divergence", [[0.5, 0.5]], [[0.2, 0.3, 0.5]], {}),
    ("bleu", ["a b", "c"], ["a b"], {}),
    ("wer", [["a b".split(), "a c".split()]], ["a b"], {}),            # several references
    ("wer", [""], ["a"], {}),                                          # no reference words
    ("mae", [], [], {}),
])
def test_bad_arguments_raise_metric_error(name, y_true, y_pred, hyper):
    with pytest.raises(MetricError):
        compute(name, y_true, y_pred, **hyper)


def test_metric_error_is_a_value_error_and_names_the_metric():
    assert issubclass(MetricError, ValueError)
    with pytest.raises(MetricError, match="mse"):
        metrics.compute("mse", [1.0, 2.0], [1.0])
