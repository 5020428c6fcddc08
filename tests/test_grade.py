"""``llmbook.grade``: for every exercise the untouched stub fails with "not
implemented yet", the reference passes, and a typical wrong implementation
fails with a message that names the case; garbage never makes ``check``
raise."""

import doctest
import inspect
import math

import numpy as np
import pytest
import torch

from conftest import ROOT
from llmbook import grade

# --- typical wrong implementations, one or two per exercise ----------------


def pattern_masks_diagonal(X, W_QK):
    s = X @ W_QK @ X.T
    s = np.where(np.triu(np.ones(s.shape, bool)), -np.inf, s)  # k=0: wrong
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def pattern_softmax_over_queries(X, W_QK):
    s = X @ W_QK @ X.T
    s = np.where(np.triu(np.ones(s.shape, bool), 1), -np.inf, s)
    e = np.exp(s - s.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def head_without_transpose(X, W_QK, W_OV):
    return grade.reference("attention_pattern")(X, W_QK) @ X @ W_OV


def attention_unscaled(Q, K, V, causal=False):
    return grade.reference("self_attention")(
        Q * math.sqrt(Q.shape[-1]), K, V, causal
    )


def attention_masks_diagonal(Q, K, V, causal=False):
    s = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if causal:
        n_q, n_k = s.shape[-2:]
        s = s.masked_fill(torch.ones(n_q, n_k).triu().bool(), -math.inf)
    return torch.softmax(s, -1) @ V


def flash_without_rescale(Q, K, V, block_q, block_k, causal=False):
    n, d = Q.shape
    O, l = torch.zeros(n, d), torch.zeros(n)
    m = torch.full((n,), -math.inf)
    for j0 in range(0, K.shape[0], block_k):
        Kj, Vj = K[j0 : j0 + block_k], V[j0 : j0 + block_k]
        for i0 in range(0, n, block_q):
            S = Q[i0 : i0 + block_q] @ Kj.T / math.sqrt(d)
            if causal:
                rows = torch.arange(i0, i0 + S.shape[0])[:, None]
                cols = torch.arange(j0, j0 + S.shape[1])[None, :]
                S = S.masked_fill(cols > rows, -math.inf)
            m_new = torch.maximum(m[i0 : i0 + block_q], S.max(-1).values)
            P = torch.exp(S - m_new[:, None])
            li = l[i0 : i0 + block_q]
            l_new = li + P.sum(-1)  # wrong: old sum not rescaled
            O[i0 : i0 + block_q] = (
                li[:, None] * O[i0 : i0 + block_q] + P @ Vj
            ) / l_new[:, None]
            l[i0 : i0 + block_q], m[i0 : i0 + block_q] = l_new, m_new
    return O, m + torch.log(l)


def lora_forward_without_scaling(x, W0, b, A, B, alpha):
    return x @ W0.T + b + (x @ B.T) @ A.T


def lora_merge_alpha_only(W0, A, B, alpha):
    return W0 + alpha * A @ B


def loss_mask_unshifted(seq_len, prompt_len, question_len, target_len):
    t, first = torch.arange(seq_len), prompt_len + question_len
    return (t >= first) & (t < first + target_len)


def magnitude_by_value(weight, sparsity):
    k = round(sparsity * weight.numel())
    if k == 0:
        return torch.ones_like(weight)
    threshold = weight.flatten().kthvalue(k).values
    return (weight > threshold).to(weight.dtype)


def magnitude_floor_count(weight, sparsity):
    k = int(sparsity * weight.numel())
    if k == 0:
        return torch.ones_like(weight)
    threshold = weight.abs().flatten().kthvalue(k).values
    return (weight.abs() > threshold).to(weight.dtype)


def channels_wrong_axis(next_weight, keep_ratio):
    importance = next_weight.pow(2).sum(dim=(1, 2, 3)).sqrt()
    n = max(1, round(keep_ratio * next_weight.shape[1]))
    return importance.argsort(descending=True)[:n].sort().values


def channels_unsorted(next_weight, keep_ratio):
    importance = next_weight.pow(2).sum(dim=(0, 2, 3)).sqrt()
    n = max(1, round(keep_ratio * next_weight.shape[1]))
    return importance.argsort(descending=True)[:n]


def scale_over_2_to_the_b(r_min, r_max, bits=8, signed=True):
    q_min = -(2 ** (bits - 1)) if signed else 0
    r_min, r_max = min(r_min, 0.0), max(r_max, 0.0)
    if r_min == r_max:
        return 1.0, 0 if signed else q_min
    s = (r_max - r_min) / 2**bits  # wrong: 2^b levels, 2^b - 1 steps
    return s, int(round(q_min - r_min / s))


def scale_without_widening(r_min, r_max, bits=8, signed=True):
    q_min = -(2 ** (bits - 1)) if signed else 0
    q_max = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    if r_min == r_max:
        return 1.0, 0 if signed else q_min
    s = (r_max - r_min) / (q_max - q_min)
    return s, min(max(int(round(q_min - r_min / s)), q_min), q_max)


def quantize_half_away(r, scale, zero_point, bits=8, signed=True):
    x = r / scale
    q = torch.sign(x) * torch.floor(x.abs() + 0.5) + zero_point
    return q.clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1).to(torch.int8)


def quantize_range_off_by_one(r, scale, zero_point, bits=8, signed=True):
    q = torch.round(r / scale) + zero_point
    return q.clamp(-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1).to(torch.int8)


def symmetric_over_2_to_the_b_minus_1(
    r, bits=8, granularity="tensor", group_size=None
):
    s = r.abs().max().reshape(1, 1) / 2 ** (bits - 1)  # uses -2^(b-1)
    q = torch.round(r / s).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return q.to(torch.int8), s


def symmetric_per_column(r, bits=8, granularity="tensor", group_size=None):
    q_max = 2 ** (bits - 1) - 1
    s = r.abs().amax(
        dim=0 if granularity == "channel" else (0, 1), keepdim=True
    )
    s = torch.where(s > 0, s / q_max, torch.ones_like(s))
    return torch.round(r / s).clamp(-q_max, q_max).to(torch.int8), s


def kmeans_empty_cluster_nan(weight, bits, iters=25):
    w = weight.flatten().float()
    k = min(2**bits, w.numel())
    c = w.sort().values[torch.linspace(0, w.numel() - 1, k).round().long()]
    for _ in range(iters):
        lab = torch.bucketize(w, (c[1:] + c[:-1]) / 2)
        sums = torch.zeros(k).scatter_add_(0, lab, w)
        counts = torch.zeros(k).scatter_add_(0, lab, torch.ones_like(w))
        c = sums / counts  # wrong: an empty cluster becomes NaN
    c = c.sort().values
    return c, torch.bucketize(w, (c[1:] + c[:-1]) / 2).reshape(weight.shape)


def accumulate_ignoring_z_w(q_w, z_w, q_x, z_x):
    w, x = q_w.to(torch.int32), q_x.to(torch.int32)
    return w @ x - z_x * w.sum(1, keepdim=True, dtype=torch.int32)


def accumulate_in_int8(q_w, z_w, q_x, z_x):
    return ((q_w - z_w) @ (q_x - z_x)).to(torch.int32)


def blockwise_one_absmax(x, code, block_size=64):
    blocks = x.reshape(-1, block_size)
    c = x.abs().max()
    idx = (blocks.reshape(-1, 1) / c - code).abs().argmin(1)
    return idx.to(torch.uint8), c.repeat(blocks.shape[0])


def zero_stage2_splits_params(
    n_params, n_dp, stage, param_bytes=2, grad_bytes=2, optim_bytes=12
):
    out = {
        "params": param_bytes * n_params / (n_dp if stage >= 2 else 1),
        "grads": grad_bytes * n_params / (n_dp if stage >= 2 else 1),
        "optim": optim_bytes * n_params / (n_dp if stage >= 1 else 1),
    }
    out["total"] = sum(out.values())
    return out


def excess_loss_without_half(lrs, batch_size, steps, h, m2, s):
    return 2 * grade.reference("quadratic_excess_loss")(
        lrs, batch_size, steps, h, m2, s
    )


def excess_loss_naive_geometric_sum(lrs, batch_size, steps, h, m2, s):
    lr = np.asarray(lrs)[:, None]
    q = (1 - lr * h) ** 2
    with np.errstate(all="ignore"):
        noise = lr**2 * s / batch_size * (1 - q**steps) / (1 - q)
        return 0.5 * (h * (q**steps * m2 + noise)).sum(1)


def excess_loss_noise_not_over_b(lrs, batch_size, steps, h, m2, s):
    return grade.reference("quadratic_excess_loss")(lrs, 1, steps, h, m2, s)


def log_law_without_2(h, m2, s, batch_size, steps):
    return np.log(4 * h**2 * steps * m2 * batch_size / s) / (h * steps)


def log_law_h_not_squared(h, m2, s, batch_size, steps):
    return np.log(4 * h * steps * m2 * batch_size / s) / (2 * h * steps)


def adam_without_bias_correction(
    p, g, m, v, lr, t, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8
):
    b1, b2 = betas
    g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return p - lr * m / (v.sqrt() + eps), m, v


def adam_decoupled_decay(
    p, g, m, v, lr, t, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8
):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    step = m_hat / (v_hat.sqrt() + eps) + weight_decay * p  # AdamW
    return p - lr * step, m, v


def adam_eps_inside_sqrt(
    p, g, m, v, lr, t, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8
):
    b1, b2 = betas
    g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return p - lr * m_hat / (v_hat + eps).sqrt(), m, v


def adam_in_place(
    p, g, m, v, lr, t, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8
):
    b1, b2 = betas  # right arithmetic, but the caller's m and v change
    g = g + weight_decay * p
    m.mul_(b1).add_((1 - b1) * g)
    v.mul_(b2).add_((1 - b2) * g * g)
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return p - lr * m_hat / (v_hat.sqrt() + eps), m.clone(), v.clone()


def days_with_2nd(n_params, n_tokens, flop_per_s, n_gpus, utilization=1.0):
    flop = 2 * n_params * n_tokens  # wrong: the forward pass alone
    return flop / (flop_per_s * utilization * n_gpus) / 86_400


def days_times_utilization(
    n_params, n_tokens, flop_per_s, n_gpus, utilization=1.0
):
    flop = 6 * n_params * n_tokens
    return flop * utilization / (flop_per_s * n_gpus) / 86_400


def kv_keys_only(n_layers, n_kv_heads, d_head, bytes_per_value=2):
    return n_layers * n_kv_heads * d_head * bytes_per_value


def gpus_floor_division(n_params, bytes_per_param, gpu_memory_gb):
    return int(n_params * bytes_per_param // (gpu_memory_gb * 1e9))


def gpus_in_gib(n_params, bytes_per_param, gpu_memory_gb):
    return math.ceil(n_params * bytes_per_param / (gpu_memory_gb * 2**30))


def chinchilla_without_c0(
    C, K_N=406.4, K_D=410.7, alpha=0.34, beta=0.28, c0=6.0
):
    ref = grade.reference("chinchilla_allocation")
    return ref(C, K_N, K_D, alpha, beta, 1.0)  # wrong: N D = C


def chinchilla_inverse_gamma(
    C, K_N=406.4, K_D=410.7, alpha=0.34, beta=0.28, c0=6.0
):
    gamma = (beta * K_D / (alpha * K_N)) ** (1 / (alpha + beta))
    x = C / c0
    return (
        gamma * x ** (beta / (alpha + beta)),
        x ** (alpha / (alpha + beta)) / gamma,
    )


def chinchilla_swapped_exponents(
    C, K_N=406.4, K_D=410.7, alpha=0.34, beta=0.28, c0=6.0
):
    gamma = (alpha * K_N / (beta * K_D)) ** (1 / (alpha + beta))
    x = C / c0
    return (
        gamma * x ** (alpha / (alpha + beta)),
        x ** (beta / (alpha + beta)) / gamma,
    )


# exercise -> [(wrong implementation, the case its message must name)]
WRONG = {
    "attention_pattern": [
        (pattern_masks_diagonal, "the diagonal (self) kept"),
        (pattern_softmax_over_queries, "no weight on later keys"),
    ],
    "single_attention_head": [(head_without_transpose, "asymmetric W_OV")],
    "self_attention": [
        (attention_masks_diagonal, "the diagonal stays"),
        (attention_unscaled, "divided by sqrt(d)"),
    ],
    "flash_attention_forward": [
        (flash_without_rescale, "tiles that do not divide N")
    ],
    "lora_forward": [(lora_forward_without_scaling, "alpha / k")],
    "lora_merge": [(lora_merge_alpha_only, "alpha / k")],
    "loss_mask": [(loss_mask_unshifted, "the homework's layout")],
    "magnitude_mask": [
        (magnitude_by_value, "magnitude, not value"),
        (magnitude_floor_count, "round(sparsity * numel)"),
    ],
    "keep_channels": [
        (channels_wrong_axis, "next_weight[:, c]"),
        (channels_unsorted, "sorted, not in order of importance"),
    ],
    "scale_zero_point": [
        (scale_over_2_to_the_b, "8-bit signed on [-1, 1]"),
        (scale_without_widening, "widened to contain 0"),
    ],
    "linear_quantize": [
        (quantize_half_away, "ties at .5 round to even"),
        (quantize_range_off_by_one, "saturates at q_min = -128"),
    ],
    "symmetric_quantize": [
        (symmetric_over_2_to_the_b_minus_1, "not / 128"),
        (symmetric_per_column, "per channel = per row"),
    ],
    "kmeans_codebook": [(kmeans_empty_cluster_nan, "clusters empty")],
    "int_linear_accumulate": [
        (accumulate_ignoring_z_w, "z_w = 3"),
        (accumulate_in_int8, "overflow int8"),
    ],
    "quantize_blockwise": [(blockwise_one_absmax, "not per tensor")],
    "zero_bytes_per_gpu": [(zero_stage2_splits_params, "stage 2")],
    "quadratic_excess_loss": [
        (excess_loss_without_half, "h/2 (q m2"),
        (excess_loss_naive_geometric_sum, "inf, not 0 / 0"),
        (excess_loss_noise_not_over_b, "divided by the batch size"),
    ],
    "log_law_lr": [
        (log_law_without_2, "/ (2 T)"),
        (log_law_h_not_squared, "h^2 inside the log"),
    ],
    "adam_step": [
        (adam_without_bias_correction, "bias correction"),
        (adam_decoupled_decay, "L2, not AdamW"),
        (adam_eps_inside_sqrt, "eps added after the square root"),
        (adam_in_place, "changed its input m in place"),
    ],
    "training_days": [
        (days_with_2nd, "2 forward + 4 backward"),
        (days_times_utilization, "utilization 0.4 divides"),
    ],
    "kv_cache_bytes_per_token": [(kv_keys_only, "K and V")],
    "gpus_needed": [
        (gpus_floor_division, "round up"),
        (gpus_in_gib, "not GiB"),
    ],
    "chinchilla_allocation": [
        (chinchilla_without_c0, "sqrt(C / c0)"),
        (chinchilla_inverse_gamma, "not its inverse"),
        (chinchilla_swapped_exponents, "C^(beta / (alpha + beta))"),
    ],
}

NAMES = list(grade.EXERCISES)


def _stub(name):
    namespace = {}
    exec(grade.stub_source(name), namespace)
    return namespace[name]


def test_the_exercises_span_the_labs():
    assert len(NAMES) >= 12
    assert len(set(grade.EXERCISES.values())) >= 5
    for chapter in grade.EXERCISES.values():
        assert (ROOT / "chapters" / f"{chapter}.md").exists(), chapter
    assert set(WRONG) == set(NAMES), "every exercise has a wrong version"


@pytest.mark.parametrize("name", NAMES)
def test_the_untouched_stub_is_not_implemented_yet(name, capsys):
    assert grade.check(name, _stub(name)) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: not implemented yet"), out


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes(name, capsys):
    assert grade.check(name, grade.reference(name)) is True
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"✓ {name}: ") and out.endswith("cases pass")
    assert int(out.split(": ")[1].split()[0]) >= 4, out


@pytest.mark.parametrize(
    "name, wrong, case",
    [(n, w, c) for n in NAMES for w, c in WRONG[n]],
    ids=[f"{n}-{w.__name__}" for n in NAMES for w, _ in WRONG[n]],
)
def test_a_typical_mistake_fails_naming_its_case(name, wrong, case, capsys):
    assert grade.check(name, wrong) is False
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"✗ {name}: case '") and case in first, out
    assert "inputs: " in out, out


@pytest.mark.parametrize("name", NAMES)
def test_the_stub_has_the_callers_signature_and_fits_79_columns(name):
    stub = _stub(name)
    for case in grade._EXERCISES[name].cases():
        inspect.signature(stub).bind(*case.args, **case.kwargs)
    source = grade.stub_source(name)
    assert max(map(len, source.splitlines())) <= 79
    assert source.rstrip().endswith("raise NotImplementedError")
    assert "Example:" in stub.__doc__ and "Returns:" in stub.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_the_worked_example_holds_for_the_reference(name):
    globs = {name: grade.reference(name), "torch": torch, "np": np}
    test = doctest.DocTestParser().get_doctest(
        _stub(name).__doc__, globs, name, None, 0
    )
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test)
    assert result.attempted >= 1 and result.failed == 0


GARBAGE = {
    "None": lambda *a, **k: None,
    "a string": lambda *a, **k: "42",
    "a wrong shape": lambda *a, **k: torch.zeros(1, 7),
    "a numpy array": lambda *a, **k: np.zeros(3),
    "a one-tuple": lambda *a, **k: (torch.zeros(2),),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_fails_without_raising(name, garbage, capsys):
    assert grade.check(name, GARBAGE[garbage]) is False
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: case '") and "expected" in out, out


def test_other_exceptions_and_non_functions_are_reported(capsys):
    assert grade.check("loss_mask", lambda *a: 1 / 0) is False
    out = capsys.readouterr().out
    assert "raised ZeroDivisionError" in out and "inputs: seq_len=100" in out
    assert grade.check("loss_mask", "not a function") is False
    assert "expected a function" in capsys.readouterr().out


def test_a_wrong_dtype_is_named(capsys):
    def float_mask(*args):
        return grade.reference("loss_mask")(*args).float()

    assert grade.check("loss_mask", float_mask) is False
    out = capsys.readouterr().out
    assert "dtype expected torch.bool, got torch.float32" in out


def test_a_failure_shows_expected_and_received_values(capsys):
    grade.check("linear_quantize", quantize_half_away)
    out = capsys.readouterr().out
    assert "expected [ 0, 2, 2, 0, -2, -2]" in out, out
    assert "received [ 1, 2, 3, -1, -2, -3]" in out, out
    assert "first at index [0]: expected 0, got 1" in out, out
    assert "tolerance: every value exactly" in out


def test_unknown_names_raise_listing_the_exercises():
    with pytest.raises(ValueError, match="linear_quantize"):
        grade.check("linear_quantise", lambda: None)
    for f in (grade.reference, grade.stub_source, grade.tolerance):
        with pytest.raises(ValueError, match="one of the exercises"):
            f("nope")


def test_warnings_from_the_students_function_are_reported_not_raised(
    capsys,
):
    def noisy(X, W_QK):
        np.exp(np.array([1000.0]))  # overflow: a RuntimeWarning
        return grade.reference("attention_pattern")(X, W_QK)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails
        assert grade.check("attention_pattern", noisy) is True
    out = capsys.readouterr().out
    assert out.startswith("✓ attention_pattern: ") and "cases pass" in out
    assert "warnings from your function: RuntimeWarning: overflow" in out


def test_use_returns_the_students_function_once_it_passes(capsys):
    ref = grade.reference("loss_mask")

    def mine(*args):
        return ref(*args)

    assert grade.use("loss_mask", mine) is mine
    assert capsys.readouterr().out == ""
    stub = _stub("loss_mask")
    assert grade.use("loss_mask", stub) is ref
    assert capsys.readouterr().out == (
        "loss_mask: using the reference implementation until yours "
        "passes grade.check\n"
    )
    assert grade.use("loss_mask", loss_mask_unshifted) is ref
    with pytest.raises(ValueError, match="one of the exercises"):
        grade.use("nope", mine)
