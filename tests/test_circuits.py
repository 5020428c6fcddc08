"""The coding lab (hw11-q3) and the multi-head identities (hw11-q2), against hand-worked values."""

import math

import numpy as np
import pytest
import torch

from llmbook.book.plotting import legible
from llmbook.topics import circuits as c


def test_single_head_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    X, W_QK, W_OV = (
        rng.normal(size=(5, 3)),
        rng.normal(size=(3, 3)),
        rng.normal(size=(3, 3)),
    )
    out = c.single_attention_head(X, W_QK, W_OV)
    for i in range(5):
        scores = np.array([X[i] @ W_QK @ X[j] for j in range(i + 1)])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        np.testing.assert_allclose(
            out[i], sum(w[j] * W_OV @ X[j] for j in range(i + 1)), rtol=1e-12
        )


def test_single_head_matches_torch_scaled_dot_product_attention():
    rng = np.random.default_rng(1)
    X, W_Q, W_K, W_V = (
        rng.normal(size=s) for s in [(6, 4), (2, 4), (2, 4), (2, 4)]
    )
    W_O = rng.normal(size=(4, 2))
    ours = c.single_attention_head(X, W_Q.T @ W_K, W_O @ W_V)
    t = lambda a: torch.tensor(a)
    ref = (
        torch.nn.functional.scaled_dot_product_attention(
            t(X @ W_Q.T)[None],
            t(X @ W_K.T)[None],
            t(X @ W_V.T)[None],
            is_causal=True,
            scale=1.0,
        )[0].numpy()
        @ W_O.T
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_softmax_is_stable_and_masks():
    p = c.stable_softmax(np.array([1000.0, 1000.0, -np.inf]))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0])
    A = c.attention_pattern(np.eye(3) * 800, np.eye(3))
    assert (
        np.allclose(np.triu(A, 1), 0)
        and np.allclose(A.sum(1), 1)
        and np.all(np.isfinite(A))
    )


def test_accepts_lists_and_rejects_bad_shapes():
    out = c.single_attention_head(
        [[1.0, 0.0], [0.0, 1.0]], [[1, 0], [0, 1]], [[2, 0], [0, 2]]
    )
    assert out.shape == (2, 2)
    with pytest.raises(ValueError, match="W_QK"):
        c.single_attention_head(
            np.ones((3, 2)), np.ones((3, 3)), np.ones((2, 2))
        )
    with pytest.raises(ValueError, match="W_OV"):
        c.single_attention_head(
            np.ones((3, 2)), np.ones((2, 2)), np.ones((2, 3))
        )
    with pytest.raises(ValueError, match="X"):
        c.single_attention_head(np.ones(3), np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="X"):
        c.single_attention_head([["a", "b"]], np.ones((2, 2)), np.ones((2, 2)))


def test_concatenation_equals_sum_of_heads():
    rng = np.random.default_rng(2)
    W_O = [rng.normal(size=(8, 2)) for _ in range(4)]
    r = [rng.normal(size=(2, 5)) for _ in range(4)]
    np.testing.assert_allclose(
        c.concat_output_matrix(W_O) @ np.vstack(r),
        sum(Wo @ rh for Wo, rh in zip(W_O, r)),
    )
    with pytest.raises(ValueError, match="per_head_W_O"):
        c.concat_output_matrix([np.ones((2, 2)), np.ones((3, 2))])


def test_embedding_layout():
    X = c.embed("bad")
    assert X.shape == (3, c.D_MODEL)
    assert X[0, c.TOK].tolist() == [0, 1, 0, 0] and X[2, c.POS].tolist() == [
        0,
        0,
        1,
        0,
        0,
    ]
    assert not X[:, c.PREV].any()
    for bad in ["", "abcdab", "abx", 42]:
        with pytest.raises(ValueError, match="sequence"):
            c.embed(bad)


def test_previous_token_head_writes_the_previous_token():
    X = c.embed("cab")
    out = c.single_attention_head(X, *c.previous_token_head(50.0))
    np.testing.assert_allclose(
        out[1:, c.PREV], [[0, 0, 1, 0], [1, 0, 0, 0]], atol=1e-12
    )  # c, then a
    assert not out[:, :9].any()


def test_hand_worked_ab():
    # "ab", strength s. Previous-token head at position 1: scores (s, 0) -> weight sig = e^s/(e^s+1) on 'a'.
    # Copying head at position 1 (query 'b'): key 0 scores -s, key 1 scores s * (1 - sig) (its 'b' share).
    for s in [0.0, 1.0, 3.0]:
        sig = math.exp(s) / (math.exp(s) + 1)
        k0, k1 = -s, s * (1 - sig)
        a1 = math.exp(k1) / (math.exp(k0) + math.exp(k1))
        np.testing.assert_allclose(
            c.induction_output("ab", s), [1 - a1, a1, 0, 0], rtol=1e-12
        )
    np.testing.assert_allclose(
        c.induction_output("ab", 1.0), [0.2194, 0.7806, 0, 0], atol=1e-4
    )


def test_hand_worked_repeated_token():
    # "aa": every previous token is 'a', both keys score alike, and both positions hold 'a'.
    for s in [0.0, 2.0, 40.0]:
        np.testing.assert_allclose(
            c.induction_output("aa", s), [1, 0, 0, 0], atol=1e-12
        )


@pytest.mark.parametrize(
    "sequence, predicted",
    [
        ("abcab", "c"),
        ("abab", "a"),
        ("dcbad", "c"),
        ("bcdcb", "c"),
        ("dbcdb", "c"),
    ],
)
def test_strong_heads_complete_the_pattern(sequence, predicted):
    out = c.induction_output(sequence, 30.0)
    assert c.ALPHABET[int(np.argmax(out))] == predicted and out.max() > 0.999


def test_two_earlier_occurrences_are_averaged():
    # "cacdc": 'c' was followed once by 'a' and once by 'd'; the head splits its attention.
    np.testing.assert_allclose(
        c.induction_output("cacdc", 30.0), [0.5, 0, 0, 0.5], atol=1e-9
    )


def test_weak_heads_blur_the_answer():
    weak, strong = (
        c.induction_output("abcab", 0.5),
        c.induction_output("abcab", 30.0),
    )
    assert weak.max() < 0.5 < strong.max()
    np.testing.assert_allclose(weak.sum(), 1.0)


def test_bad_strength():
    for bad in [-1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="attention_strength"):
            c.induction_output("abab", bad)


def test_bigram_counts_and_entropy_by_hand():
    counts = c.bigram_counts([0, 1, 0, 1, 1], 2)  # pairs 01, 10, 01, 11
    np.testing.assert_array_equal(counts, [[0, 2], [1, 1]])
    # after 0: always 1 (0 nats); after 1: half and half (ln 2), for 2 of the 4 pairs
    assert c.bigram_entropy(counts) == pytest.approx(0.5 * math.log(2))
    with pytest.raises(ValueError, match="sequence"):
        c.bigram_counts([0, 3], 2)
    with pytest.raises(ValueError, match="counts"):
        c.bigram_entropy(np.zeros((2, 2)))


def test_zero_layer_gradient_matches_autograd():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 5, size=(5, 5)).astype(float)
    W_E, W_U = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 5, 3))
    losses, logits, d_logits = c.zero_layer_loss(counts, W_E, W_U)
    t_E, t_U = (
        torch.tensor(W_E, requires_grad=True),
        torch.tensor(W_U, requires_grad=True),
    )
    t_logits = (t_U @ t_E).transpose(1, 2)
    t_logits.retain_grad()
    t_losses = (
        -(torch.tensor(counts) * torch.log_softmax(t_logits, -1)).sum((1, 2))
        / counts.sum()
    )
    t_losses.sum().backward()
    np.testing.assert_allclose(losses, t_losses.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        d_logits, t_logits.grad.numpy(), rtol=1e-10, atol=1e-14
    )


def test_zero_layer_reaches_the_bigram_optimum_only_when_wide_enough():
    # softmax ignores a constant per column, so rank n_vocab - 1 suffices; 1 does not
    counts = c.bigram_counts(
        c.sample_markov(c.markov_chain(5, 2.0, seed=1), 20_000, seed=1), 5
    )
    losses, tables = c.train_zero_layer(
        counts, [1, 4, 5], steps=400, lr=0.05, seed=0
    )
    excess = losses - c.bigram_entropy(counts)
    assert excess[0] > 1e-2 and excess[1] < 1e-6 and excess[2] < 1e-6
    freq = counts / counts.sum(1, keepdims=True)
    np.testing.assert_allclose(
        np.exp(tables[1]) / np.exp(tables[1]).sum(1, keepdims=True),
        freq,
        atol=1e-3,
    )
    with pytest.raises(ValueError, match="d_models"):
        c.train_zero_layer(counts, [0, 2])


def test_markov_chain_rows_are_distributions():
    P = c.markov_chain(6, 0.5, seed=2)
    np.testing.assert_allclose(P.sum(1), 1.0)
    seq = c.sample_markov(P, 30_000, seed=2)
    freq = c.bigram_counts(seq, 6)
    np.testing.assert_allclose(freq / freq.sum(1, keepdims=True), P, atol=0.05)


def test_induction_answer():
    assert c.induction_answer("abcab") == "c"
    assert c.induction_answer("abab") == "a"
    assert c.induction_answer("aa") == "a"
    for no_single in ["ab", "cacdc", "a"]:
        with pytest.raises(ValueError, match="induction answer"):
            c.induction_answer(no_single)


def test_induction_threshold_flips_the_argmax():
    # "abcab": at low strength the output is close to the token frequencies
    # (b occurs twice), so b wins; above the threshold the answer c does.
    s_star = c.induction_threshold("abcab")
    at = c.induction_output("abcab", s_star)
    np.testing.assert_allclose(at[2], at[1], atol=1e-9)  # c ties b there
    below = c.induction_output("abcab", s_star - 1e-3)
    above = c.induction_output("abcab", s_star + 1e-3)
    assert np.argmax(below) == 1 and np.argmax(above) == 2
    # cross-check: the first point of a fine grid where c wins
    grid = np.linspace(0, 4, 40001)
    c_wins = [np.argmax(c.induction_output("abcab", s)) == 2 for s in grid]
    first = grid[np.argmax(c_wins)]
    assert abs(first - s_star) <= 1e-4
    assert all(c_wins[np.argmax(c_wins) :])


def test_induction_threshold_for_a_weight():
    s99 = c.induction_threshold("abcab", weight=0.99)
    np.testing.assert_allclose(
        c.induction_output("abcab", s99)[2], 0.99, atol=1e-9
    )
    assert s99 > c.induction_threshold("abcab")
    # "aa" puts all its weight on a at every strength
    assert c.induction_threshold("aa") == 0.0
    assert c.induction_threshold("aa", weight=0.99) == 0.0


def test_induction_threshold_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        c.induction_threshold("abcab", weight=1.5)
    with pytest.raises(ValueError, match="not reached"):
        c.induction_threshold("abcab", weight=0.99, s_max=2.0)
    with pytest.raises(ValueError, match="induction answer"):
        c.induction_threshold("cacdc")


def test_answer_weight_names_the_wrong_token_at_low_strength():
    # "abcab" at strength 1, by hand from induction_output: b (the current
    # token, twice in the sequence) carries the most weight, not c.
    got = c.answer_weight("abcab", 1.0)
    out = c.induction_output("abcab", 1.0)
    assert got["answer"] == "c" and got["top"] == "b" and not got["right"]
    assert got["p_answer"] == pytest.approx(out[2])
    assert got["p_top"] == pytest.approx(out[1])
    assert got["p_answer"] == pytest.approx(0.297, abs=5e-4)
    assert got["where"] == "on b, not on the answer c"
    strong = c.answer_weight("abcab", 16.0)
    assert strong["right"] and strong["where"] == "on the answer c"
    assert strong["p_answer"] > 0.999


def test_induction_steps_and_figures():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = c.induction_steps("abcab", 8.0)
    A_prev, wrote, A_copy = (M for M, _, _ in panels)
    # each query attends (almost) only to the position before it
    np.testing.assert_allclose(A_prev[1:].argmax(1), np.arange(4))
    # position 2 ('c') wrote 'b' (token index 1) as its previous token
    assert wrote[2].argmax() == 1 and wrote[2, 1] > 0.99
    # the last query ('b') attends to position 2, right after the first 'b'
    assert A_copy[-1].argmax() == 2
    np.testing.assert_allclose(A_copy.sum(1), 1.0)
    fig = c.plot_induction_steps("abcab", 8.0)
    img = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), A_prev)
    assert legible(fig)  # issue 20: on a phone and a laptop
    plt.close(fig)
    fig = c.plot_hand_set_matrices(2.0)
    qk = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(qk, c.previous_token_head(2.0)[0])
    assert legible(fig)
    plt.close(fig)


def test_wqk_grid_and_width_sweep_figures():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = ["a", "b"]
    values = {f"case {k}": np.array([[k, -k], [0.0, 1.0]]) for k in range(4)}
    fig = c.plot_wqk_grid(values, names, "score", signed=True, vmin=-3, vmax=3)
    assert len(fig.axes) == 5  # four panels and the colour bar
    for ax, (name, M) in zip(fig.axes, values.items()):
        assert ax.get_title() == f"W_QK = {name}"
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), M)
    assert fig.axes[4].get_ylabel() == "score"
    plt.close(fig)
    sweep = pd.Series([0.5, 1e-3, 0.0], index=[1, 2, 3])
    fig = c.plot_width_sweep(sweep, n_vocab=3, floor=1e-9)
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 1e-3, 1e-9])
    assert ax.lines[1].get_xdata()[0] == 2  # the line at n_vocab - 1
    assert len(ax.texts) == 1  # the zero is drawn at the floor, and says so
    plt.close(fig)
