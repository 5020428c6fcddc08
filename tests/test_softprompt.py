"""Tests of llmbook.topics.softprompt: the loss mask (homework layout, edge cases), the soft prompt
(only it trains, prompt positions are batch-independent in a causal model), PEFT agreement,
the hard-prompt search, and the shipped checkpoint's reproducibility."""

import json
import sys

import pytest
import torch

from llmbook.topics import softprompt as sp
from conftest import ROOT

CKPT = ROOT / "lib" / "llmbook" / "data" / "softprompt_gpt.pt"


# ---------------------------------------------------------------- loss mask


def test_homework_mask_is_outputs_50_to_71():
    mask = sp.homework_mask()
    assert mask.shape == (100,)
    on = [t + 1 for t in range(100) if mask[t]]  # 1-indexed output positions
    assert on == list(range(50, 72))
    # the homework's own example: the answer (input 71) is predicted at output 70
    assert (
        mask[70 - 1] and mask[71 - 1] and not mask[72 - 1] and not mask[49 - 1]
    )


def test_mask_is_the_target_span_shifted_left_by_one():
    S, P, Q, T = 20, 3, 4, 6
    mask = sp.loss_mask(S, P, Q, T)
    is_target = [P + Q <= i < P + Q + T for i in range(S)]  # input indices
    assert mask.tolist() == [
        is_target[t + 1] if t + 1 < S else False for t in range(S)
    ]


def test_mask_without_padding_and_without_prompt():
    full = sp.loss_mask(10, 2, 3, 5)  # 2 + 3 + 5 = 10: no padding
    assert (
        full.nonzero().flatten().tolist() == [4, 5, 6, 7, 8] and not full[-1]
    )
    bare = sp.loss_mask(8, 0, 3, 2)  # prompt length 0
    assert bare.nonzero().flatten().tolist() == [2, 3]
    assert sp.loss_mask(5, 0, 1, 4).sum() == 4  # one question token is enough


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (
            dict(seq_len=10, prompt_len=-1, question_len=3, target_len=2),
            "prompt_len",
        ),
        (
            dict(seq_len=10, prompt_len=0, question_len=0, target_len=2),
            "question_len",
        ),
        (
            dict(seq_len=10, prompt_len=2, question_len=3, target_len=0),
            "target_len",
        ),
        (
            dict(seq_len=10, prompt_len=5, question_len=3, target_len=3),
            "seq_len",
        ),
        (
            dict(seq_len=10, prompt_len=1.5, question_len=3, target_len=3),
            "prompt_len",
        ),
    ],
)
def test_bad_spans_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sp.loss_mask(**kwargs)


def test_masked_loss_is_cross_entropy_of_the_next_token():
    g = torch.Generator().manual_seed(0)
    logits, tokens = (
        torch.randn(2, 6, 5, generator=g),
        torch.randint(0, 5, (2, 6), generator=g),
    )
    mask = sp.loss_mask(6, 1, 2, 2)  # outputs 2, 3
    want = torch.stack(
        [
            -logits[b, t].log_softmax(-1)[tokens[b, t + 1]]
            for b in range(2)
            for t in (2, 3)
        ]
    ).mean()
    assert torch.allclose(
        sp.masked_next_token_loss(logits, tokens, mask), want
    )
    with pytest.raises(ValueError, match="mask"):
        sp.masked_next_token_loss(
            logits, tokens, torch.ones(6, dtype=torch.bool)
        )


def test_book_layout_targets_decode_to_the_worked_answer():
    g = torch.Generator().manual_seed(0)
    x = sp.task_examples("minus", 4, torch.tensor([9]), g)
    mask = sp.target_mask()
    words = [sp.VOCAB_WORDS[i] for i in x[0, 1:][mask[:-1]].tolist()]
    assert words == [
        "9",
        "-",
        "4",
        "=",
        "5",
        ".",
        "Final",
        "answer",
        ":",
        "5",
        "\n",
    ]
    assert sp.parse_final_answer(x[:, sp.N_SLOTS + sp.QUESTION_LEN :]) == [5]
    with pytest.raises(ValueError, match="op"):
        sp.task_examples("times", 2, torch.tensor([1]), g)
    with pytest.raises(ValueError, match="k"):
        sp.task_examples("plus", 12, torch.tensor([1]), g)


# ---------------------------------------------------------------- the soft prompt


@pytest.fixture(scope="module")
def small():
    model = sp.freeze(sp.TinyGPT(d_model=32, d_mlp=64, seed=1))
    g = torch.Generator().manual_seed(1)
    return model, sp.pretraining_batch(6, g)


def test_only_the_soft_prompt_receives_gradients(small):
    model, tokens = small
    soft = sp.SoftPrompt(torch.randn(sp.N_SLOTS, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = model(embeds=soft(model.embed(tokens[:, sp.N_SLOTS :])))
    sp.masked_next_token_loss(logits, tokens, sp.target_mask()).backward()
    assert all(p.grad is None for p in model.parameters())
    assert soft.prompt.grad is not None and soft.prompt.grad.abs().sum() > 0
    assert sp.trainable_count(model, soft) == sp.N_SLOTS * 32
    trained, _ = sp.train_prompts(
        model, torch.randn(1, sp.N_SLOTS, 32), tokens[None], 3, 0.1
    )
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )


def test_prompt_positions_do_not_depend_on_the_batch_in_a_causal_model(small):
    model, tokens = small
    prompt = torch.randn(sp.N_SLOTS, 32)
    _, resid = sp.prompted_logits(model, prompt, tokens, return_resid=True)
    for r in resid:
        p = r[:, : sp.N_SLOTS]
        assert (p - p[:1]).abs().max() <= 1e-6
    _, resid = sp.prompted_logits(
        model, prompt, tokens, causal=False, return_resid=True
    )
    p = resid[-1][:, : sp.N_SLOTS]
    assert (
        p - p[:1]
    ).abs().max() > 1e-3  # a bidirectional model reads the question


def test_soft_prompt_equals_the_same_tokens_as_a_hard_prompt(small):
    model, tokens = small
    hard = model(tokens)
    soft = sp.prompted_logits(
        model, model.embed(tokens[:, : sp.N_SLOTS]), tokens
    )  # (B, K, d)
    assert torch.allclose(hard, soft, atol=1e-6)


def test_tasks_trained_together_equal_tasks_trained_alone(small):
    model, tokens = small
    init = torch.randn(
        2, sp.N_SLOTS, 32, generator=torch.Generator().manual_seed(2)
    )
    pair = tokens.view(2, 3, -1)
    both, snaps = sp.train_prompts(
        model, init, pair, 4, 0.05, snapshots=(0, 2)
    )
    for t in range(2):
        alone, _ = sp.train_prompts(
            model, init[t : t + 1], pair[t : t + 1], 4, 0.05
        )
        assert torch.allclose(both[t], alone[0], atol=1e-5)
    assert torch.equal(snaps[0], init) and not torch.equal(snaps[2], init)
    with pytest.raises(ValueError, match="init"):
        sp.train_prompts(model, init[0], pair, 1, 0.1)


def test_prompt_losses_match_the_masked_loss(small):
    model, tokens = small
    slots = torch.tensor([[sp.TOK["plus"], sp.TOK["3"], 1, 1], [0, 0, 0, 0]])
    batch = tokens.clone()
    batch[:, : sp.N_SLOTS] = slots[1]
    want = sp.masked_next_token_loss(model(batch), batch, sp.target_mask())
    assert torch.allclose(
        sp.prompt_losses(model, slots, tokens)[1], want, atol=1e-6
    )


def test_reptile_rejects_unknown_methods_and_stays_put_without_a_meta_step(
    small,
):
    model, tokens = small
    init = torch.randn(sp.N_SLOTS, 32)
    tasks = lambda g: (tokens.view(2, 3, -1), tokens.view(2, 3, -1))  # noqa: E731
    with pytest.raises(ValueError, match="method"):
        sp.reptile(
            model,
            init,
            tasks,
            1,
            1,
            0.1,
            0.5,
            torch.Generator(),
            method="maml2",
        )
    same = sp.reptile(model, init, tasks, 2, 2, 0.1, 0.0, torch.Generator())
    assert torch.equal(same, init)
    moved = sp.reptile(
        model, init, tasks, 2, 2, 0.1, 0.5, torch.Generator(), method="fomaml"
    )
    assert not torch.equal(moved, init)


# ---------------------------------------------------------------- PEFT cross-check


def test_hand_written_soft_prompt_equals_peft_prompt_tuning():
    hf = sp.tiny_gpt2(n_vocab=40, n_ctx=24, d_model=16, seed=0)
    peft_model = sp.peft_prompt_tuning(hf, n_virtual=5)
    vectors = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(vectors)
    ids = torch.randint(
        0, 40, (3, 7), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        theirs = peft_model(input_ids=ids).logits
        ours = sp.hf_soft_prompt_logits(hf, sp.SoftPrompt(vectors), ids)
    assert theirs.shape == ours.shape == (3, 12, 40)
    assert torch.allclose(theirs, ours, atol=1e-5)
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert trainable == 5 * 16


# ---------------------------------------------------------------- the shipped checkpoint


def test_checkpoint_is_small_and_its_first_steps_reproduce():
    meta = json.loads(CKPT.with_suffix(".json").read_text())
    assert CKPT.stat().st_size <= 2_000_000
    sys.path.insert(0, str(ROOT / "tools"))
    import train_softprompt_model as tool

    assert meta["settings"] == tool.SETTINGS
    torch.set_num_threads(1)
    # the one-cycle schedule depends on the total steps, so compare under the full schedule
    model, losses = sp.pretrain(**meta["settings"], stop_after=10)
    assert losses == pytest.approx(meta["losses"][:10], rel=1e-4)
    model.load_state_dict(torch.load(CKPT, weights_only=True))


def test_pretrained_model_solves_named_tasks_and_search_finds_a_working_prompt():
    model = sp.load_pretrained()
    assert sp.trainable_count(model) == 0
    g = torch.Generator().manual_seed(3)
    sets = {
        t: sp.task_examples(*t, sp.a_range(*t), g)
        for t in [("plus", 2), ("minus", 9)]
    }
    by_group = sp.accuracy_by_group(model, sets)
    assert by_group == {
        t: sp.answer_accuracy(model, x) for t, x in sets.items()
    }
    x = sets[("plus", 2)]
    assert torch.equal(
        sp.greedy_complete(model, x),
        x[:, sp.N_SLOTS + sp.QUESTION_LEN :][:, :11],
    )
    wrong = x.clone()
    wrong[:, 1] = sp.TOK["5"]  # name the wrong k: "plus 5"
    assert sp.answer_accuracy(model, wrong) < 0.5
    words, loss, scored = sp.beam_search_hard_prompt(model, x[:4], beam=2)
    assert scored == len(sp.VOCAB_WORDS) * (1 + 2 * (sp.N_SLOTS - 1))
    found = x.clone()
    found[:, : sp.N_SLOTS] = torch.tensor([sp.TOK[w] for w in words])
    assert (
        sp.answer_accuracy(model, found) >= 0.9
    )  # found on 4 questions, scored on 20
    assert loss == pytest.approx(
        float(sp.prompt_losses(model, found[:1, : sp.N_SLOTS], x[:4])[0])
    )
