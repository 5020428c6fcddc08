"""LoRA and NF4 by hand against PEFT, bitsandbytes, torchao, autograd and hand-worked values."""

import copy
import math

import pytest
import torch
from torch import nn

from llmbook.topics import lora, quant
from llmbook.topics import seqtasks as st


class Net(nn.Module):
    """A plain module with named linear layers, as PEFT wraps them by ``target_modules``."""

    def __init__(self):
        super().__init__()
        self.q, self.v, self.mlp = (
            nn.Linear(6, 5),
            nn.Linear(5, 7, bias=False),
            nn.Linear(7, 3),
        )

    def forward(self, x):
        return self.mlp(torch.tanh(self.v(torch.tanh(self.q(x)))))


def _pair(rank=2, alpha=3.0, rslora=False, seed=0):
    """Our LoRA model and PEFT's around identical base weights and identical A, B."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = Net()
    ours = copy.deepcopy(base)
    lora.apply_lora(
        ours,
        ["q", "v"],
        rank,
        alpha,
        rslora=rslora,
        generator=torch.Generator().manual_seed(1),
    )
    g = torch.Generator().manual_seed(2)
    for m in lora.lora_modules(
        ours
    ).values():  # both factors non-zero, so gradients are generic
        with torch.no_grad():
            m.A.normal_(generator=g)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=["q", "v"],
        lora_dropout=0.0,
        use_rslora=rslora,
    )
    theirs = get_peft_model(copy.deepcopy(base), cfg)
    for name, m in lora.lora_modules(ours).items():
        layer = theirs.base_model.model.get_submodule(name)
        with (
            torch.no_grad()
        ):  # PEFT's lora_B (out x r) is our A; its lora_A (r x in) is our B
            layer.lora_B["default"].weight.copy_(m.A)
            layer.lora_A["default"].weight.copy_(m.B)
    return ours, theirs


@pytest.mark.parametrize("rslora", [False, True])
def test_outputs_and_gradients_match_peft(rslora):
    ours, theirs = _pair(rslora=rslora)
    x = torch.randn(11, 6, generator=torch.Generator().manual_seed(3))
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-6, atol=1e-6)
    (y_ours**2).sum().backward()
    (y_theirs**2).sum().backward()
    n_peft = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert lora.count_trainable(ours) == n_peft
    for name, m in lora.lora_modules(ours).items():
        layer = theirs.base_model.model.get_submodule(name)
        peft_b, peft_a = (
            layer.lora_B["default"].weight,
            layer.lora_A["default"].weight,
        )
        torch.testing.assert_close(m.A.grad, peft_b.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.B.grad, peft_a.grad, rtol=1e-5, atol=1e-6)
        assert m.base.weight.grad is None


def test_merged_weights_match_peft_and_merge_equals_unmerged():
    ours, theirs = _pair()
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(4))
    before = ours(x)
    for m in lora.lora_modules(ours).values():
        m.merge()
    merged = theirs.merge_and_unload()
    torch.testing.assert_close(ours(x), before, rtol=1e-6, atol=1e-6)
    for name, m in lora.lora_modules(ours).items():
        want = merged.get_submodule(name).weight
        torch.testing.assert_close(m.base.weight, want, rtol=1e-6, atol=1e-6)
    w_merged = {
        n: m.base.weight.clone() for n, m in lora.lora_modules(ours).items()
    }
    for name, m in lora.lora_modules(ours).items():
        m.unmerge()
        torch.testing.assert_close(
            m.base.weight + m.delta_weight(), w_merged[name]
        )


def test_default_init_is_peft_default_and_leaves_the_model_unchanged():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    base = Net()
    x = torch.randn(4, 6)
    ours = copy.deepcopy(base)
    lora.apply_lora(
        ours, ["q", "v"], 2, generator=torch.Generator().manual_seed(0)
    )
    theirs = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=2, target_modules=["q", "v"])
    )
    torch.testing.assert_close(ours(x), base(x))
    for name, m in lora.lora_modules(ours).items():
        peft_a = (
            theirs.base_model.model.get_submodule(name)
            .lora_A["default"]
            .weight
        )
        assert torch.count_nonzero(m.A) == 0 and peft_a.shape == m.B.shape
        bound = 1 / math.sqrt(
            m.base.in_features
        )  # kaiming_uniform(a=√5) bound, both sides
        assert m.B.abs().max() <= bound and peft_a.abs().max() <= bound
        assert m.B.abs().max() > 0.5 * bound


def test_hand_gradients_are_G_Bt_and_At_G():
    torch.manual_seed(0)
    layer = lora.LoRALinear(
        nn.Linear(5, 4, bias=False), rank=2, alpha=3.0, init="xavier"
    )
    x = torch.randn(8, 5)
    W = (layer.base.weight + layer.delta_weight()).detach().requires_grad_()
    (torch.sin(x @ W.T)).sum().backward()
    G = W.grad  # dL/dW, shape (m, ℓ)
    torch.sin(layer(x)).sum().backward()
    torch.testing.assert_close(
        layer.A.grad, layer.scaling * G @ layer.B.T.detach()
    )
    torch.testing.assert_close(
        layer.B.grad, layer.scaling * layer.A.T.detach() @ G
    )


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_zero_init_gradients_are_exactly_zero_and_nothing_moves(opt):
    torch.manual_seed(1)
    model = Net()
    lora.apply_lora(model, ["q", "v", "mlp"], 2, init="zeros")
    params = [p for p in model.parameters() if p.requires_grad]
    make = {
        "sgd": lambda: torch.optim.SGD(params, lr=0.1),
        "momentum": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        "adam": lambda: torch.optim.Adam(params, lr=0.1),
    }[opt]
    o = make()
    for _ in range(20):
        x = torch.randn(16, 6)
        loss = ((model(x) - 1) ** 2).mean()
        o.zero_grad()
        loss.backward()
        assert all(torch.count_nonzero(p.grad) == 0 for p in params)
        o.step()
    assert all(torch.count_nonzero(p) == 0 for p in params)


def test_bad_arguments_name_themselves():
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="rank"):
        lora.LoRALinear(lin, 0)
    with pytest.raises(ValueError, match="rank"):
        lora.LoRALinear(lin, -1)
    with pytest.raises(ValueError, match="rank"):
        lora.LoRALinear(lin, 4)  # min(m, ℓ) = 3
    lora.LoRALinear(lin, 3)
    with pytest.raises(ValueError, match="init"):
        lora.LoRALinear(lin, 1, init="gaussian")
    with pytest.raises(ValueError, match="targets.*'k'"):
        lora.apply_lora(Net(), ["q", "k"], 1)
    with pytest.raises(ValueError, match="k"):
        lora.lora_params(4, 4, 0)


def test_apply_lora_matches_names_like_peft():
    model = st.TinyLM(d_model=8, n_layers=2, n_heads=2, d_mlp=16, n_ctx=6)
    wrapped = lora.apply_lora(model, ["attn.q", "fc1"], 2)
    assert wrapped == [
        "blocks.0.attn.q",
        "blocks.0.mlp.fc1",
        "blocks.1.attn.q",
        "blocks.1.mlp.fc1",
    ]
    assert lora.count_trainable(model) == 2 * (2 * (8 + 8) + 2 * (8 + 16))


def test_adapter_swap_restores_outputs():
    torch.manual_seed(2)
    model = Net()
    x = torch.randn(3, 6)
    base_out = model(x)
    lora.apply_lora(model, ["q"], 2, init="xavier")
    state_1, out_1 = lora.adapter_state(model), model(x)
    lora.load_adapter(
        model, {k: torch.zeros_like(v) for k, v in state_1.items()}
    )
    torch.testing.assert_close(model(x), base_out)
    lora.load_adapter(model, state_1)
    torch.testing.assert_close(model(x), out_1)


def test_byte_counts_hand_worked():
    # m = 1000, ℓ = 500, k = 8: 8 (1000 + 500) = 12 000 numbers = 48 000 bytes in fp32
    assert lora.lora_params(1000, 500, 8) == 12_000
    assert lora.lora_bytes(1000, 500, 8) == 48_000
    assert lora.full_bytes(1000, 500) == 2_000_000
    assert lora.break_even_rank(1000, 500) == pytest.approx(1000 * 500 / 1500)
    # GPT-3 query and value, r = 4, 96 layers, fp16: 2 matrices x 2 factors x 12288 x 4 x 96 x 2 B
    per_layer = 2 * lora.lora_bytes(12288, 12288, 4, bytes_per_param=2)
    assert 96 * per_layer == 37_748_736


def test_memory_table_hand_row():
    # the hand-worked m = 1000, ℓ = 500, k = 8 above, as the table prints it
    table = lora.memory_table({"w": (1000, 500)}, [1, 8])
    row = table.loc["w"]
    assert row["m × ℓ"] == "1000 × 500"
    assert row["full ΔW"] == "2.00 MB"
    assert row["A, B at k=8"] == "48.0 kB"
    assert row["ratio k=8"] == "2.40%"
    assert row["ratio k=1"] == "0.30%"
    assert row["break-even k*"] == "333.3"


def test_plot_memory_ratio_lines_and_marks():
    import matplotlib.pyplot as plt

    fig = lora.plot_memory_ratio({"a": (64, 64), "b": (100, 50)})
    (ax,) = fig.axes
    labelled = [
        ln for ln in ax.get_lines() if not ln.get_label().startswith("_")
    ]
    assert [ln.get_label() for ln in labelled] == ["a", "b"]
    # for m = ℓ = 64 the ratio is k (64 + 64) / 64² = k / 32: 1 at k* = 32
    k, ratio = labelled[0].get_data()
    assert k[0] == 1 and 32 < k[-1] <= 64
    assert list(ratio) == pytest.approx([v / 32 for v in k])
    assert len(ax.get_lines()) == 5  # 2 curves, 2 k* marks, ratio = 1
    plt.close(fig)


def test_xavier_ratio_formula_matches_sampling():
    m, ell, k = 64, 48, 4
    g = torch.Generator().manual_seed(0)
    ratios = []
    for _ in range(200):
        layer = lora.LoRALinear(
            nn.Linear(ell, m), k, init="xavier", generator=g
        )
        ratios.append((layer.A @ layer.B).norm().item() ** 2)
    w0_var = 1 / (3 * ell)  # nn.Linear's default U(±1/√ℓ)
    want = lora.xavier_product_ratio(m, ell, k, w0_var) ** 2 * m * ell * w0_var
    assert sum(ratios) / len(ratios) == pytest.approx(want, rel=0.05)


# ------------------------------------------------------------------------------------------ NF4


def test_nf4_offset_and_code_hand_worked():
    assert quant.nf4_offset() == pytest.approx(0.9677083, abs=1e-7)
    code = quant.nf4_code()
    assert (
        code.shape == (16,)
        and code[0] == -1
        and code[-1] == 1
        and (code == 0).sum() == 1
    )
    assert bool((code.diff() > 0).all())
    assert (code < 0).sum() == 7 and (code > 0).sum() == 8
    # the largest positive value before normalising is Φ⁻¹(δ): the negatives are scaled by it
    from scipy.stats import norm

    delta = quant.nf4_offset()
    assert code[1].item() == pytest.approx(
        -norm.ppf(delta - (delta - 0.5) / 7) / norm.ppf(delta), rel=1e-6
    )


def test_nf4_code_and_indices_match_bitsandbytes():
    import bitsandbytes.functional as bnbf

    x = torch.randn(64 * 40, generator=torch.Generator().manual_seed(0))
    packed, state = bnbf.quantize_4bit(x, blocksize=64, quant_type="nf4")
    torch.testing.assert_close(
        quant.nf4_code(), state.code[:16], rtol=0, atol=1e-6
    )
    idx, absmax = quant.quantize_blockwise(x, quant.nf4_code(), 64)
    torch.testing.assert_close(absmax, state.absmax)
    p = packed.flatten()  # two indices per byte, the first in the high nibble
    assert torch.equal(torch.stack([p >> 4, p & 15], 1).flatten(), idx)
    deq = bnbf.dequantize_4bit(packed, state)
    ours = quant.dequantize_blockwise(idx, absmax, quant.nf4_code())
    torch.testing.assert_close(ours, deq.flatten())


def test_double_quantization_matches_torchao():
    from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
    ao = to_nf4(x, block_size=64, scaler_block_size=256)
    _, absmax = quant.quantize_blockwise(x, quant.nf4_code(), 64)
    q, scales, mean = quant.double_quantize(absmax, 256)
    assert torch.equal(q, ao.quantized_scalers)
    torch.testing.assert_close(scales, ao.quantization_factor)
    torch.testing.assert_close(mean, ao.scaler_mean)
    # with torchao's own (4-decimal) table the 4-bit indices agree exactly
    idx, _ = quant.quantize_blockwise(x, ao.nf4, 64)
    d = ao.quantized_data
    assert torch.equal(torch.stack([d >> 4, d & 15], 1).flatten(), idx)
    back = quant.dequantize_double(q, scales, mean)
    assert (back - absmax).abs().max() <= (absmax - mean).abs().max() / 127.5


def test_constant_bits_hand_worked():
    assert quant.constant_bits_per_param(64, 32) == 0.5
    assert quant.constant_bits_per_param(64, 8, 256, 32) == pytest.approx(
        8 / 64 + 32 / (64 * 256)
    )
    assert quant.constant_bits_per_param(64, 8, 256, 32) == pytest.approx(
        0.127, abs=5e-4
    )


def test_nf4_linear_reconstructs_and_blocks_gradients():
    torch.manual_seed(3)
    lin = nn.Linear(128, 64)
    q = quant.NF4Linear(lin)
    err = (q.dequantized_weight() - lin.weight).abs()
    gaps = quant.nf4_code().diff().max()
    assert err.max() <= gaps / 2 * lin.weight.abs().max() * 1.01
    model = nn.Sequential(lin)
    lora.quantize_model_nf4(model, ["0"])
    lora.apply_lora(model, ["0"], 4, init="xavier")
    x = torch.randn(5, 128)
    model(x).sum().backward()
    assert (
        model[0].A.grad is not None and list(model[0].base.parameters()) == []
    )
    with pytest.raises(ValueError, match="block_size"):
        quant.quantize_blockwise(torch.randn(65), quant.nf4_code(), 64)


def test_int4_code_is_uniform():
    c = quant.int4_code()
    assert c.numel() == 15 and torch.allclose(
        c.diff(), torch.full((14,), 1 / 7)
    )


# ------------------------------------------------------------------------------ teacher-student


def test_teacher_has_exact_rank_and_equal_singular_values():
    w0, dw = lora.teacher_student(
        20, 12, 3, torch.Generator().manual_seed(0), sigma=2.0
    )
    s = torch.linalg.svdvals(dw)
    torch.testing.assert_close(s[:3], torch.full((3,), 2.0))
    assert s[3:].abs().max() < 1e-5 and w0.shape == (20, 12)
    with pytest.raises(ValueError, match="r_star"):
        lora.teacher_student(4, 3, 5, torch.Generator())


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_stacked_training_equals_separate_torch_optim_runs(opt):
    w0, dw = lora.teacher_student(6, 5, 2, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    A, B = (
        torch.randn(2, 6, 3, generator=g) * 0.1,
        torch.randn(2, 3, 5, generator=g),
    )
    lrs = [0.01, 0.03]
    hist, _ = lora.train_stacked(
        w0,
        w0 + dw,
        [A, B],
        lrs,
        steps=15,
        batch=8,
        seed=3,
        noise=0.1,
        scaling=0.5,
        optimizer=opt,
    )
    for i, lr in enumerate(lrs):
        a, b = A[i].clone().requires_grad_(), B[i].clone().requires_grad_()
        o = (
            torch.optim.Adam([a, b], lr=lr)
            if opt == "adam"
            else torch.optim.SGD([a, b], lr=lr)
        )
        gen = torch.Generator().manual_seed(3)
        for t in range(15):
            x = torch.randn(8, 5, generator=gen)
            y = x @ (w0 + dw).T + 0.1 * torch.randn(8, 6, generator=gen)
            loss = ((x @ (w0 + 0.5 * a @ b).T - y) ** 2).mean()
            assert loss.item() == pytest.approx(hist[t, i].item(), rel=1e-4)
            o.zero_grad()
            loss.backward()
            o.step()


def test_qlora_layer_matches_peft_on_bitsandbytes_linear4bit():
    """Our NF4 base + LoRA against PEFT's LoRA around a bitsandbytes Linear4bit (fp32 constants)."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(6)
    lin = nn.Linear(128, 64)

    class One(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.proj = layer

        def forward(self, x):
            return self.proj(x)

    q4 = bnb.nn.Linear4bit(
        128,
        64,
        compute_dtype=torch.float32,
        compress_statistics=False,
        quant_type="nf4",
    )
    q4.weight = bnb.nn.Params4bit(
        lin.weight.data.clone(),
        requires_grad=False,
        compress_statistics=False,
        quant_type="nf4",
    )
    q4.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
    q4 = q4.to("cpu")  # quantizes the weight
    q4.support_avx512bf16_for_cpu = (
        False  # eval forwards on AVX512-BF16 CPUs repack the weights
    )
    ours = One(quant.NF4Linear(lin, block_size2=None))
    lora.apply_lora(
        ours,
        ["proj"],
        4,
        alpha=8.0,
        init="xavier",
        generator=torch.Generator().manual_seed(0),
    )
    theirs = get_peft_model(
        One(q4), LoraConfig(r=4, lora_alpha=8, target_modules=["proj"])
    )
    layer = theirs.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.copy_(ours.proj.A)
        layer.lora_A["default"].weight.copy_(ours.proj.B)
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(1))
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
    y_ours.square().sum().backward()
    y_theirs.square().sum().backward()
    peft_b = layer.lora_B["default"].weight
    torch.testing.assert_close(
        ours.proj.A.grad, peft_b.grad, rtol=1e-4, atol=1e-5
    )


# ---------------------------------------- the multi-run helpers (core.trainer)


def test_prompt_split_is_a_partition_of_all_digit_strings():
    train, test = lora.prompt_split(3, 100, torch.Generator().manual_seed(0))
    assert train.shape == (900, 3) and test.shape == (100, 3)
    ids = lambda x: set((x @ torch.tensor([100, 10, 1])).tolist())  # noqa: E731
    assert ids(train) | ids(test) == set(range(1000))
    assert not ids(train) & ids(test)
    with pytest.raises(ValueError, match="n_test"):
        lora.prompt_split(2, 100, torch.Generator())


def test_task_sequences_equal_make_batch_and_targets_mask_the_prompt():
    g = torch.Generator().manual_seed(3)
    seq = st.make_batch("reverse", 5, 4, g)
    assert torch.equal(lora.task_sequences("reverse", seq[:, 1:5]), seq)
    y = lora.lm_targets(seq)
    assert (y[:, :5] == lora.IGNORE).all()
    assert torch.equal(y[:, 5:], seq[:, 6:])
    assert torch.equal(lora.lm_targets(seq, masked=False), seq[:, 1:])


def test_run_loss_equals_seqtasks_lm_loss():
    torch.manual_seed(0)
    model = st.TinyLM(16, 1, 2, 32, n_ctx=10)
    seq = st.make_batch("copy", 8, 4, torch.Generator().manual_seed(1))
    for masked in (True, False):
        ours = lora.lm_run_loss(
            model(seq[:, :-1]), lora.lm_targets(seq, masked)
        )
        torch.testing.assert_close(ours, st.lm_loss(model, seq, masked))


def test_run_batches_draw_each_run_from_its_own_seed():
    pool, _ = lora.prompt_split(2, 10, torch.Generator().manual_seed(0))
    data = lora.run_batches(
        [("copy", 1), ("copy", 1), ("copy", 2)], pool, 4, 3
    )
    x, y = data(2)
    assert x.shape == (3, 4, 5) and y.shape == (3, 4, 5)
    assert torch.equal(x[0], x[1]) and not torch.equal(x[0], x[2])
    idx = torch.randint(
        len(pool), (3, 1, 4), generator=torch.Generator().manual_seed(1)
    )
    want = lora.task_sequences("copy", pool[idx[2, 0]])
    assert torch.equal(x[0], want[:, :-1])


def test_stacked_finetuning_equals_one_run_with_torch_optim():
    """finetune_runs' run i is the LoRA run on base i trained alone with
    torch.optim.Adam on the same batches."""
    torch.manual_seed(0)
    base = st.TinyLM(16, 1, 2, 32, n_ctx=6)
    pool, test_x = lora.prompt_split(2, 20, torch.Generator().manual_seed(0))
    test = lora.task_sequences("rotate", test_x)
    out = lora.finetune_runs(
        [base],
        [(0, 3), (0, 4)],
        ["q", "fc1"],
        2,
        4.0,
        1e-2,
        "rotate",
        pool,
        test,
        4,
        5,
    )
    model = lora.lora_copy(base, ["q", "fc1"], 2, 4.0, 4)
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-2
    )
    data = lora.run_batches([("rotate", 10_004)], pool, 4, 5)
    for t in range(5):
        x, y = data(t)
        loss = lora.lm_run_loss(model(x[0]), y[0])
        torch.testing.assert_close(
            out["losses"][t, 1], loss.detach(), rtol=1e-4, atol=1e-6
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    right = sum(
        bool(v)
        for v in (model(test[:, :-1]).argmax(-1)[:, 3:] == test[:, 4:]).all(1)
    )
    assert int(out["correct"][1]) == right


def test_freeze_to_buffers_keeps_only_trainable_parameters():
    model = Net()
    lora.apply_lora(
        model, ["q"], 2, generator=torch.Generator().manual_seed(0)
    )
    x = torch.randn(3, 6)
    before = model(x)
    lora.freeze_to_buffers(model)
    assert [n for n, _ in model.named_parameters()] == ["q.A", "q.B"]
    torch.testing.assert_close(model(x), before)


def test_accuracy_text():
    assert lora.accuracy_text(1.0) == "100 %"
    assert lora.accuracy_text(0.062) == "6.2 %"
    with pytest.raises(ValueError):
        lora.accuracy_text(1.5)


def test_plot_median_band_draws_the_median():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    losses = torch.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 6.0]])
    line = lora.plot_median_band(ax, losses, "x")
    assert list(line.get_ydata()) == [2.0, 5.0]
    plt.close(fig)


def test_eckart_young_floor_hand_worked():
    got = lora.eckart_young_floor([1, 4, 6], 4, 1.0, 64, 0.1)
    assert got == pytest.approx([3 / 64 + 0.01, 0.01, 0.01])


def test_peft_init_pads_ranks_and_init_factors_kinds():
    a, b = lora.peft_init(3, 5, 8, [1, 2, 3])
    assert a.shape == (3, 5, 3) and (a == 0).all()
    assert (
        (b[0, 1:] == 0).all() and (b[1, 2:] == 0).all() and (b[2] != 0).all()
    )
    assert b.abs().max() <= 1 / math.sqrt(8)
    g = torch.Generator().manual_seed(0)
    a, b = lora.init_factors("b_zero", 5, 8, 2, g)
    assert (b == 0).all() and (a != 0).all()
    with pytest.raises(ValueError, match="kind"):
        lora.init_factors("zeros?", 5, 8, 2, g)


def test_blockwise_error_is_zero_on_code_values_and_xavier_table_uses_formula():
    code = quant.nf4_code()
    w = code.repeat(4)  # every block has absmax 1: exact
    assert lora.blockwise_error(w, code, 16) == pytest.approx(0.0, abs=1e-7)
    tab = lora.xavier_table([64], [4], 0)
    assert tab["formula"].item() == pytest.approx(
        lora.xavier_product_ratio(64, 64, 4, 1 / 64)
    )
    assert tab["‖AB‖/‖W0‖ sampled"].item() == pytest.approx(
        tab["formula"].item(), rel=0.2
    )


def test_lr_sweep_full_at_lr_zero_like_is_the_starting_loss():
    g = torch.Generator().manual_seed(0)
    w0, dw = lora.teacher_student(8, 8, 2, g)
    full, lo = lora.lr_sweep(w0, w0 + dw, 2, [1e-8, 1e-2], 20, 16, 0, 0.0)
    start = (dw.norm() ** 2 / 8).item()  # E over x ~ N(0, I) of the MSE
    assert full[0] == pytest.approx(start, rel=0.3)
    assert lo[0] == pytest.approx(start, rel=0.3)
    assert full[1] < full[0] and lo[1] < lo[0]


def test_interval_text():
    assert lora.interval_text({"lo": -0.5, "hi": 2}, str) == "[-0.5, 2]"


def test_evaluate_equals_the_two_scores_each_from_its_own_pass():
    # one forward pass per task serves exact match and loss, unchanged
    from llmbook.topics import seqtasks as st

    torch.manual_seed(0)
    model = st.TinyLM(16, 1, 2, 32, 10)
    x = torch.randint(0, 10, (40, 4), generator=torch.Generator())
    held = {t: lora.task_sequences(t, x) for t in ("copy", "rotate")}
    got = lora.evaluate(model, held, list(held))
    for t, seq in held.items():
        want = (st.exact_match(model, seq), st.lm_loss(model, seq).item())
        assert got[t] == want
    # the exact match from logits by hand: targets one-hot, one row broken
    seq = held["copy"]
    n = (seq.shape[1] - 2) // 2
    logits = torch.nn.functional.one_hot(seq[:, 1:], st.VOCAB_SIZE).float()
    assert st.logits_exact_match(logits, seq) == 1.0
    logits[0, n + 1] = logits[0, n + 1].roll(1)  # first answer digit wrong
    assert st.logits_exact_match(logits, seq) == pytest.approx(39 / 40)


def test_finetune_tasks_equals_one_finetune_runs_per_task():
    # both tasks' runs in one stack: every result bit-equal to its own call
    torch.manual_seed(0)
    base = st.TinyLM(16, 1, 2, 32, 10)
    g = torch.Generator().manual_seed(1)
    pool, test = lora.prompt_split(4, 50, g)
    held = {t: lora.task_sequences(t, test) for t in ("copy", "rotate")}
    runs = [(0, 0), (0, 1)]
    args = (["q", "v"], 2, 4.0, 1e-2)
    got = lora.finetune_tasks(
        [base], runs, *args, list(held), pool, held, 8, 6
    )
    assert list(got) == list(held)
    for t in held:
        want = lora.finetune_runs([base], runs, *args, t, pool, held[t], 8, 6)
        for k in ("losses", "final", "correct", "loss"):
            assert torch.equal(got[t][k], want[k]), (t, k)
        for a, b in zip(got[t]["state"][1:], want["state"][1:]):
            assert all(torch.equal(a[k], b[k]) for k in b)
    assert not torch.equal(got["copy"]["losses"], got["rotate"]["losses"])
