"""Bit-level float decoding against torch/numpy for every format, including
subnormals, infinities and NaN; the format table against torch.finfo and
numpy.finfo; the stall of a low-precision running sum."""

import math

import numpy as np
import pytest
import torch

from llmbook import formats

NAMES = sorted(formats.FORMATS)


def _specials(name):
    f = formats.get_format(name)
    p = formats.format_properties(name)
    vals = [0.0, -0.0, p["min_subnormal"], -p["min_subnormal"],
            p["min_normal"], p["max"], -p["max"], 1.0, -2.5]
    if f.ieee_specials:
        vals += [math.inf, -math.inf]
    return vals


@pytest.mark.parametrize("name", NAMES)
def test_decode_rebuilds_random_and_special_values(name):
    f = formats.get_format(name)
    g = torch.Generator().manual_seed(0)
    p = formats.format_properties(name)
    # random magnitudes over the whole exponent range, both signs
    span = math.log2(p["max"]) - math.log2(p["min_subnormal"])
    exps = torch.rand(2000, generator=g, dtype=torch.float64) * span
    mags = torch.exp2(exps + math.log2(p["min_subnormal"]))
    signs = torch.where(torch.rand(2000, generator=g) < 0.5, -1.0, 1.0)
    x = torch.cat([mags * signs, torch.tensor(_specials(name))])
    x = x.clamp(-p["max"], p["max"]) if not f.ieee_specials else x
    xf = x.to(f.dtype)
    got = formats.compose_value(*formats.split_bits(xf), name)
    want = xf.to(torch.float64)
    assert torch.equal(got, want)
    # the sign of zero survives
    zeros = torch.tensor([0.0, -0.0], dtype=f.dtype)
    assert torch.signbit(
        formats.compose_value(*formats.split_bits(zeros), name)
    ).tolist() == [False, True]


@pytest.mark.parametrize("name", NAMES)
def test_nan_patterns(name):
    f = formats.get_format(name)
    x = torch.tensor([math.nan], dtype=torch.float32).to(f.dtype)
    s, e, m = formats.split_bits(x)
    assert int(e) == 2**f.exp_bits - 1 and int(m) != 0
    assert torch.isnan(formats.compose_value(s, e, m, name)).all()


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_fields_agree_with_numpy_bits(name):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(500) * 1e3).astype(name)
    a[:3] = [np.inf, -np.inf, 2.0**-20]
    uint = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}
    raw = a.view(uint[name]).astype(object)
    f = formats.get_format(name)
    s, e, m = formats.split_bits(torch.from_numpy(a))
    for i in range(a.size):
        r = int(raw[i])
        assert int(s[i]) == r >> (f.bits - 1)
        assert int(e[i]) == (r >> f.man_bits) & (2**f.exp_bits - 1)
        assert int(m[i]) == r & (2**f.man_bits - 1)


def test_lecture_bit_examples():
    # the lecture: exponent field 01111010 is 2^(122-127); mantissa 11000...
    # with the implicit 1 is 1.75
    assert formats.compose_value(0, 0b01111010, 0, "float32") == 2.0**-5
    assert formats.bit_string(1.75, "bfloat16") == "0|01111111|1100000"
    assert formats.bit_string(-2.0, "float16") == "1|10000|0000000000"


@pytest.mark.parametrize("name", NAMES)
def test_table_against_torch_finfo(name):
    p = formats.format_properties(name)
    fi = torch.finfo(formats.get_format(name).dtype)
    assert p["bits"] == fi.bits
    assert p["max"] == fi.max and p["eps"] == fi.eps
    assert p["min_normal"] == fi.smallest_normal
    # smallest subnormal: the bit pattern 0...01
    one = torch.tensor([1], dtype=torch.int64).to(
        formats._INT_VIEW[p["bits"]]
    )
    tiny = one.view(formats.get_format(name).dtype).double().item()
    assert p["min_subnormal"] == tiny
    assert p["bits"] == 1 + p["exp_bits"] + p["man_bits"]


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_table_against_numpy_finfo(name):
    p = formats.format_properties(name)
    fi = np.finfo(name)
    assert p["digits"] == fi.precision
    assert p["min_subnormal"] == float(fi.smallest_subnormal)
    assert (p["exp_bits"], p["man_bits"]) == (fi.nexp, fi.nmant)


def test_representable_values_count_and_spacing():
    v = formats.representable_values("float8_e4m3fn")
    # 128 non-negative patterns minus one NaN
    assert v.numel() == 127 and v.max() == 448.0
    v16 = formats.representable_values("float16")
    assert v16.numel() == 2**15 - 2**10  # exponent 31 is inf/NaN
    assert torch.equal(v16, v16.to(torch.float16).double())
    gaps = torch.diff(v16)
    assert gaps[v16[:-1] >= 1024].min() == 1.0  # spacing 2^(10-10)


@pytest.mark.parametrize("inc,name", [(1.0, "float16"), (0.01, "float16"),
                                      (1e-3, "float16"), (0.01, "float32")])
def test_running_sum_stalls_where_predicted(inc, name):
    stall = formats.stall_value(inc, name)
    n = int(4 * stall / inc) if name == "float16" else 2_000_000
    sums = formats.running_sum(np.full(n, inc), name)
    if name == "float16":
        assert float(sums[-1]) == stall
        # and it was still growing just below the stall
        below = sums[sums < stall]
        assert below.size > 0 and float(below[-1]) < stall
    else:
        assert float(sums[-1]) < stall


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        formats.get_format("float12")
    with pytest.raises(ValueError, match="name"):
        formats.format_properties("int8")
    with pytest.raises(ValueError, match="x"):
        formats.split_bits([1.0])
    with pytest.raises(ValueError, match="name"):
        formats.representable_values("float32")
    with pytest.raises(ValueError, match="x"):
        formats.running_sum([], "float16")
    with pytest.raises(ValueError, match="name"):
        formats.running_sum([1.0], "bfloat16")
    with pytest.raises(ValueError, match="increment"):
        formats.stall_value(0.0, "float16")
