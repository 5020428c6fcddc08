"""The tiny transformer and its generated tasks: hand-worked sequences, masks and losses."""

import pytest
import torch
from torch.nn import functional as F

from llmbook.topics import seqtasks as st


def test_responses_hand_worked():
    x = torch.tensor([[3, 1, 4, 1]])
    assert st.respond("reverse", x).tolist() == [[1, 4, 1, 3]]
    assert st.respond("increment", torch.tensor([[9, 0]])).tolist() == [[0, 1]]
    assert st.respond("swap_pairs", x).tolist() == [[1, 3, 1, 4]]
    assert st.respond("sort", x).tolist() == [[1, 1, 3, 4]]
    assert st.respond("rotate", x).tolist() == [[1, 4, 1, 3]]
    with pytest.raises(ValueError, match="task"):
        st.respond("add", x)


def test_batch_layout_and_mask():
    seq = st.make_batch("copy", 3, 4, torch.Generator().manual_seed(0))
    assert seq.shape == (3, 10) and (seq[:, 0] == st.task_token("copy")).all()
    assert (seq[:, 5] == st.SEP).all() and torch.equal(seq[:, 1:5], seq[:, 6:])
    # targets are seq[:, 1:]; the response y sits at target positions 5..8
    assert st.response_mask(4).nonzero().flatten().tolist() == [5, 6, 7, 8]


def test_masked_loss_scores_only_the_response():
    torch.manual_seed(0)
    model = st.TinyLM(d_model=8, n_layers=1, n_heads=2, d_mlp=16, n_ctx=10)
    seq = st.make_batch("reverse", 5, 4, torch.Generator().manual_seed(1))
    logits = model(seq[:, :-1])
    per_token = F.cross_entropy(
        logits[:, 5:].reshape(-1, st.VOCAB_SIZE), seq[:, 6:].reshape(-1)
    )
    assert st.lm_loss(model, seq).item() == pytest.approx(
        per_token.item(), rel=1e-6
    )
    full = F.cross_entropy(
        logits.reshape(-1, st.VOCAB_SIZE), seq[:, 1:].reshape(-1)
    )
    assert st.lm_loss(model, seq, masked=False).item() == pytest.approx(
        full.item(), rel=1e-6
    )


def test_exact_match_equals_greedy_decoding():
    torch.manual_seed(2)
    model = st.TinyLM(d_model=16, n_layers=1, n_heads=2, d_mlp=32, n_ctx=10)
    st.train(model, "copy", steps=60, lr=1e-2, batch=32, n=4, seed=0)
    seq = st.make_batch("copy", 64, 4, torch.Generator().manual_seed(3))
    out = seq[:, :6].clone()
    with torch.no_grad():
        for _ in range(4):
            out = torch.cat([out, model(out)[:, -1:].argmax(-1)], dim=1)
    greedy = (out[:, 6:] == seq[:, 6:]).all(dim=1).float().mean().item()
    assert st.exact_match(model, seq) == pytest.approx(greedy)


def test_causal_model_ignores_the_future():
    torch.manual_seed(4)
    model = st.TinyLM(d_model=8, n_layers=2, n_heads=2, d_mlp=16, n_ctx=10)
    seq = st.make_batch("copy", 2, 4, torch.Generator().manual_seed(5))
    changed = seq.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 10
    torch.testing.assert_close(model(seq)[:, :-1], model(changed)[:, :-1])
