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


# ---------------------------------------------------------------- runs, folds, summaries


def test_fast_answer_hits_equal_greedy_decoding():
    model = sp.load_pretrained()
    g = torch.Generator().manual_seed(4)
    x = sp.task_examples("plus", 3, sp.a_range("plus", 3), g)
    x[::2, 1] = sp.TOK["6"]  # half of the rows name the wrong k
    scale = torch.linspace(0, 1.5, len(x))[:, None, None]
    prompts = model.embed(x[:, : sp.N_SLOTS]) + scale * torch.randn(
        len(x), sp.N_SLOTS, 64, generator=g
    )
    for p in (None, prompts, prompts[1]):
        got = sp.answer_hits(model, x, p)
        truth = sp.parse_final_answer(x[:, sp.N_SLOTS + sp.QUESTION_LEN :])
        slow = sp.parse_final_answer(sp.greedy_complete(model, x, p))
        want = [a is not None and a == t for a, t in zip(slow, truth)]
        assert got.tolist() == want
        if p is None or p.dim() == 3:
            assert 0 < sum(want) < len(want)  # both paths are exercised
    per_run = sp.hits_per_run(
        model, prompts.view(4, 5, 4, 64)[:, 0], x.view(4, 5, -1)
    )
    assert per_run.shape == (4, 5)
    assert sp.question_numbers(x).tolist() == sp.a_range("plus", 3).tolist()


def test_fold_split_partitions_the_numbers():
    numbers = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    held = [sp.fold_split(numbers, 16, f, 5)[1] for f in range(5)]
    assert sorted(torch.cat(held).tolist()) == list(range(20))
    train = [sp.fold_split(numbers, 4, f, 5)[0] for f in range(5)]
    assert sorted(torch.cat(train).tolist()) == list(range(20))
    a, b = sp.fold_split(numbers, 1, 2, 5)
    assert a.tolist() == [int(numbers[8])] and len(b) == 19
    for kwargs, name in [
        (dict(n_train=20, fold=0, n_folds=5), "n_train"),
        (dict(n_train=4, fold=5, n_folds=5), "fold"),
        (dict(n_train=4, fold=0, n_folds=0), "n_folds"),
    ]:
        with pytest.raises(ValueError, match=name):
            sp.fold_split(numbers, **kwargs)


def test_accuracy_summary_by_hand():
    from scipy import stats

    hits = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    s = sp.accuracy_summary(hits)
    assert s["runs"] == [0.5, 1.0] and s["median"] == 0.75
    assert (s["min"], s["max"], s["p"], s["trials"]) == (0.5, 1.0, 0.75, 8)
    ci = stats.binomtest(6, 8).proportion_ci(0.95, method="exact")
    assert s["binom_lo"] == pytest.approx(ci.low)
    assert s["binom_hi"] == pytest.approx(ci.high)
    half = stats.t.ppf(0.975, 1) * 0.5 / 2**0.5 / 2**0.5  # sd = 0.354
    assert s["t_lo"] == pytest.approx(max(0.75 - half, 0.0))
    assert s["t_hi"] == 1.0  # clipped
    assert s["lo"] == min(s["t_lo"], s["binom_lo"]) and s["hi"] == 1.0
    # two rows per question: each question counts once
    grouped = sp.accuracy_summary(hits, groups=torch.tensor([0, 0, 1, 1]))
    assert grouped["trials"] == 4 and grouped["p"] == 0.75
    one = sp.accuracy_summary(torch.tensor([[1, 0, 1, 1]]))
    assert one["t_lo"] == one["t_hi"] == 0.75
    assert (one["lo"], one["hi"]) == (one["binom_lo"], one["binom_hi"])
    with pytest.raises(ValueError, match="hits"):
        sp.accuracy_summary(torch.ones(3))


def test_runs_trained_together_equal_runs_trained_alone(small):
    model, tokens = small
    g = torch.Generator().manual_seed(5)
    init = torch.randn(2, sp.N_SLOTS, 32, generator=g)
    tasks = tokens.view(2, 1, 3, -1)  # two runs, one task of 3 questions

    def both(gen):
        return tasks, tasks

    for method, lr in (("reptile", 0.5), ("fomaml", 0.05)):
        together = sp.reptile(model, init, both, 2, 2, 0.1, lr, g, method)
        for r in range(2):
            alone = sp.reptile(
                model,
                init[r],
                lambda gen: (tasks[r], tasks[r]),
                2,
                2,
                0.1,
                lr,
                g,
                method,
            )
            assert torch.allclose(together[r], alone, atol=1e-5)
    # a stream that repeats one batch trains as the fixed batch does
    fixed, _ = sp.train_prompts(model, init, tokens.view(2, 3, -1), 3, 0.05)
    stream, _ = sp.train_prompts(
        model, init, lambda step: tokens.view(2, 3, -1), 3, 0.05
    )
    assert torch.equal(fixed, stream)


def test_finetune_runs_match_one_run_trained_alone():
    model = sp.freeze(sp.TinyGPT(d_model=32, d_mlp=64, seed=2))
    g = torch.Generator().manual_seed(6)
    x = torch.stack(
        [
            sp.task_examples("plus", 1, torch.arange(3) + 3 * r, g)
            for r in (0, 1)
        ]
    )
    runs = sp.finetune_runs(model, x, 5, 1e-3)
    for r in (0, 1):
        alone = sp.finetune_full(model, x[r], 5, 1e-3)
        assert torch.allclose(runs[r](x[0]), alone(x[0]), atol=1e-4)
    assert not torch.allclose(runs[0](x[0]), model(x[0]), atol=1e-3)
    assert sp.trainable_count(*runs) == 0


def test_summary_table_and_forgetting_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = sp.accuracy_summary(torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    table = sp.summary_table({("soft", 4): s, "hard": s})
    assert list(table.index) == ["soft 4", "hard"]
    assert table.loc["hard", "median"] == 0.75
    assert table.loc["soft 4", "questions"] == 8
    fig, ax = plt.subplots()
    after = [[0.2, 0.5], [0.4, 0.9], [0.3, 0.7]]
    sp.plot_forgetting(ax, ["+1", "+2"], [1.0, 0.8], after)
    heights = [round(b.get_height(), 6) for b in ax.patches]
    assert heights == [1.0, 0.8, 0.3, 0.7]  # before, then the medians
    plt.close(fig)


def test_plot_curves_draws_the_median_and_the_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    runs = [[0.1, 0.5, 0.9], [0.3, 0.6, 0.7], [0.2, 0.4, 0.8]]
    sp.plot_curves(ax, (0, 1, 9), {"a": runs})
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 10]
    assert list(line.get_ydata()) == pytest.approx([0.2, 0.5, 0.8])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(
        0.9
    )
    plt.close(fig)


def test_meta_batches_and_vocabulary_prompts():
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    tasks = [("plus", 1), ("minus", 2), ("plus", 3)]
    support, query = sp.meta_batch(tasks, 2, 3, 5, gens)
    assert support.shape == (2, 2, 3, sp.SEQ_LEN)
    assert query.shape == (2, 2, 5, sp.SEQ_LEN)
    both = torch.cat([support, query], 2)
    for run in both:
        for task in run:
            a = sp.question_numbers(task).tolist()
            assert len(set(a)) == 8  # distinct numbers, none shared
    again = sp.meta_batch(
        tasks, 2, 3, 5, [torch.Generator().manual_seed(s) for s in (0, 1)]
    )
    assert torch.equal(again[0], support) and not torch.equal(
        support[0], support[1]
    )
    with pytest.raises(ValueError, match="n must"):
        sp.random_questions(("plus", 1), 21, gens[0])
    embed = torch.arange(10.0)[:, None].expand(10, 3)
    p = sp.vocab_prompts(embed, gens)
    assert p.shape == (2, sp.N_SLOTS, 3)
    assert torch.equal(p[..., 0], p[..., 1])  # whole rows of embed
    assert set(p[..., 0].flatten().tolist()) <= set(range(10))


def test_spread_reuse_and_peft_helpers(small):
    model, tokens = small
    prompt = torch.randn(
        sp.N_SLOTS, 32, generator=torch.Generator().manual_seed(7)
    )
    s = sp.prompt_spread(model, prompt, tokens)
    assert s.shape == (len(model.blocks) + 1, sp.SEQ_LEN)
    assert s[:, : sp.N_SLOTS].max() == 0 and s[:, sp.N_SLOTS :].max() > 0
    _, resid = sp.prompted_logits(
        model, prompt, tokens, causal=False, return_resid=True
    )
    r = resid[1][:, 5]  # block 0's output at position 6, by hand
    bidir = sp.prompt_spread(model, prompt, tokens, causal=False)
    assert bidir[1, 5] == pytest.approx(
        float((r.max(0)[0] - r.min(0)[0]).max())
    )
    assert bidir[1:, : sp.N_SLOTS].min() > 0
    assert sp.prefix_reuse_error(model, prompt, tokens) < 1e-5
    ours, theirs, trainable, total = sp.peft_cross_check(
        40, 16, 5, 0, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert trainable == 5 * 16 and total > trainable


def test_loss_mask_plot_colours_the_scored_outputs():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = sp.loss_mask(12, 2, 3, 4)
    fig, ax = plt.subplots()
    sp.plot_loss_mask(ax, mask, 2, 3, 4)
    rows = ax.get_images()[0].get_array()
    assert rows[0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert rows[1].tolist() == rows[0].tolist()[1:] + [3]
    assert [int(v == 2) for v in rows[2]] == mask.int().tolist()
    assert [t.get_text() for t in ax.texts] == [
        "prompt",
        "question",
        "targets",
        "padding",
    ]
    plt.close(fig)
