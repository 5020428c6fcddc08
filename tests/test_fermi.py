"""Every Fermi formula against a value worked out by hand, plus bad input."""

import math

import pytest

from llmbook.book.plotting import legible
from llmbook.core import accounting, hardware
from llmbook.topics import fermi


def test_model_bytes_fp16():
    assert accounting.model_bytes(1e9) == 2e9  # 1B params x 2 B = 2 GB
    assert accounting.model_bytes(1e14, 2) == 2e14  # GPT-6: 200 TB
    assert accounting.model_bytes(175e9, 4) == 7e11  # fp32 GPT-3: 700 GB


def test_devices_needed_rounds_up_and_is_exact_on_boundaries():
    assert hardware.devices_needed(2e14, 100e9) == 2000
    assert (
        hardware.devices_needed(2e12, 141e9) == 15
    )  # 2000 / 141 = 14.18 -> 15
    assert hardware.devices_needed(1.0, 100e9) == 1


def test_storage_cost_per_year():
    # 200 TB = 2e8 MB; 2e8 x 0.00005 USD = 10,000 USD; DRAM 2e8 x 0.004 = 800,000 USD
    assert fermi.storage_cost_per_year(2e14, 0.00005) == pytest.approx(1e4)
    assert fermi.storage_cost_per_year(2e14, 0.0040) == pytest.approx(8e5)
    assert fermi.storage_cost_per_year(
        2e14, 0.0040, lifetime_years=4
    ) == pytest.approx(2e5)


def test_latency_and_tokens_per_minute():
    s = hardware.memory_bound_latency(2e14, 4.8e12)
    assert s == pytest.approx(41.6667, rel=1e-4)  # 200 TB / 4.8 TB/s
    assert fermi.tokens_per_minute(s) == pytest.approx(1.44)
    gpt3 = hardware.memory_bound_latency(3.5e11, 4.8e12)
    assert gpt3 == pytest.approx(0.0729167, rel=1e-5)
    assert fermi.tokens_per_minute(gpt3) == pytest.approx(822.857, rel=1e-5)


def test_activation_bytes_gpt3():
    # 96 layers x 96 heads x 128 dims x 2 bytes = 2,359,296 bytes
    assert accounting.activation_bytes_per_token(96, 96, 128) == 2_359_296
    assert 3.5e11 / accounting.activation_bytes_per_token(
        96, 96, 128
    ) == pytest.approx(148_349.34, rel=1e-6)


def test_kv_cache_gpt3():
    # K and V: 2 x 96 layers x 12,288 values x 2 bytes = 4,718,592 bytes per token of context,
    # twice the homework's "activations per token" (96 x 96 x 128 x 2 bytes)
    assert accounting.kv_cache_bytes_per_token(96, 96, 128) == 4_718_592
    assert accounting.kv_cache_bytes_per_token(
        96, 96, 128
    ) == 2 * accounting.activation_bytes_per_token(96, 96, 128)


def test_decode_step_roofline_by_hand():
    # 1T params, bf16 weights: 2 TB / 4.8 TB/s = 0.41667 s however small the batch
    assert hardware.decode_step_seconds(
        1e12, 1, 1.98e15, 4.8e12
    ) == pytest.approx(2e12 / 4.8e12)
    # 1000 sequences: 2e15 FLOP / 1.98e15 FLOP/s = 1.0101 s > 0.41667 s, compute-bound
    assert hardware.decode_step_seconds(
        1e12, 1000, 1.98e15, 4.8e12
    ) == pytest.approx(2e15 / 1.98e15)
    # half utilisation doubles the compute time
    assert hardware.decode_step_seconds(
        1e12, 1000, 1.98e15, 4.8e12, utilization=0.5
    ) == pytest.approx(4e15 / 1.98e15)
    # a 1 GB cache per sequence: (2 TB + 10 x 1 GB) / 4.8 TB/s
    t = hardware.decode_step_seconds(
        1e12, 10, 1.98e15, 4.8e12, kv_bytes_per_seq=1e9
    )
    assert t == pytest.approx(2.01e12 / 4.8e12)
    out = hardware.decode_step_seconds(1e12, [1, 10, 1000], 1.98e15, 4.8e12)
    assert out.shape == (3,) and out[0] == out[1] < out[2]


def test_compute_bound_batch_is_where_the_two_times_meet():
    # ridge point: 1.98e15 FLOP/s x 2 B / (2 FLOP x 4.8e12 B/s) = 412.5 sequences, for any size
    assert hardware.compute_bound_batch(
        1e12, 1.98e15, 4.8e12
    ) == pytest.approx(412.5)
    assert hardware.compute_bound_batch(
        175e9, 1.98e15, 4.8e12
    ) == pytest.approx(412.5)
    assert hardware.compute_bound_batch(
        1e12, 0.989e15, 4.8e12, utilization=0.4
    ) == pytest.approx(0.989e15 * 0.4 / 4.8e12)
    for kv in [0.0, 1e8, 2e9]:
        b = hardware.compute_bound_batch(
            175e9, 1.98e15, 4.8e12, kv_bytes_per_seq=kv
        )
        flop_time = 2 * 175e9 * b / 1.98e15
        mem_time = (3.5e11 + b * kv) / 4.8e12
        assert flop_time == pytest.approx(mem_time, rel=1e-12)
    # GPT-3 with full 2048-token caches: 9.66 GB of cache per sequence, never compute-bound
    kv = 2048 * accounting.kv_cache_bytes_per_token(96, 96, 128)
    assert (
        hardware.compute_bound_batch(
            175e9, 1.98e15, 4.8e12, kv_bytes_per_seq=kv
        )
        == math.inf
    )


def test_two_flop_per_parameter_per_token_matches_torch_flop_counter():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    layer = torch.nn.Linear(64, 32, bias=False)
    tokens = torch.randn(7, 64)
    with FlopCounterMode(display=False) as counter:
        layer(tokens)
    assert counter.get_total_flops() == accounting.inference_flop(
        layer.weight.numel(), 7
    )


def test_petaflop_day_and_rental():
    assert hardware.petaflop_day() == 8.64e19
    hours = hardware.device_seconds(8.64e19, 1.98e15) / 3600
    assert hours == pytest.approx(12.1212, rel=1e-5)
    assert hardware.rental_cost(8.64e19, 1.98e15, 1.5) == pytest.approx(
        18.1818, rel=1e-5
    )
    # GPT-3: 3640 PF-days x 18.18 USD = 66,182 USD
    assert hardware.rental_cost(3640 * 8.64e19, 1.98e15, 1.5) == pytest.approx(
        66181.8, rel=1e-5
    )
    # at 30 % utilisation it costs 1/0.3 times as much
    assert hardware.rental_cost(
        8.64e19, 1.98e15, 1.5, utilization=0.3
    ) == pytest.approx(18.1818 / 0.3, rel=1e-5)


def test_wall_clock_gpt6():
    # 1e30 FLOP / (3e7 x 1.98e15 FLOP/s) = 1.6835e7 s = 4676.4 h
    assert hardware.wall_clock_seconds(
        1e30, 1.98e15, 30e6
    ) / 3600 == pytest.approx(4676.4, rel=1e-4)


def test_inference_flop_and_cost():
    assert accounting.inference_flop(1e12, 1e6) == 2e18
    assert hardware.rental_cost(2e18, 1.98e15, 1.5) == pytest.approx(
        0.420875, rel=1e-5
    )


def test_landauer():
    e = fermi.landauer_joules(1, 300)
    assert e == pytest.approx(2.8710e-21, rel=1e-4)
    assert fermi.landauer_joules(32, 300) * 1.98e15 == pytest.approx(
        1.8191e-4, rel=1e-4
    )


def test_words_and_geometric_mean():
    assert fermi.words_from_tokens(1.4e6) == pytest.approx(1e6)
    assert fermi.geometric_mean(50, 250) == pytest.approx(math.sqrt(12500))


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: accounting.model_bytes(-1), "n_params"),
        (lambda: accounting.model_bytes(0), "n_params"),
        (lambda: accounting.model_bytes("1e9"), "n_params"),
        (lambda: accounting.model_bytes(1e9, float("nan")), "bytes_per_param"),
        (lambda: hardware.devices_needed(1e12, 0), "device_bytes"),
        (lambda: fermi.storage_cost_per_year(1e12, -0.1), "usd_per_megabyte"),
        (
            lambda: hardware.memory_bound_latency(1e12, None),
            "bandwidth_bytes_per_s",
        ),
        (
            lambda: hardware.device_seconds(1e20, 1e15, utilization=1.5),
            "utilization",
        ),
        (
            lambda: hardware.device_seconds(1e20, 1e15, utilization=0),
            "utilization",
        ),
        (
            lambda: accounting.activation_bytes_per_token(96, True, 128),
            "n_heads",
        ),
        (lambda: fermi.landauer_joules(32, -300), "temperature_k"),
        (lambda: hardware.wall_clock_seconds(1e30, 1e15, 0), "n_devices"),
        (lambda: accounting.kv_cache_bytes_per_token(0, 96, 128), "n_layers"),
        (lambda: hardware.decode_step_seconds(1e12, 0, 1e15, 4.8e12), "batch"),
        (
            lambda: hardware.decode_step_seconds(
                1e12, 1, 1e15, 4.8e12, kv_bytes_per_seq=-1
            ),
            "kv_bytes_per_seq",
        ),
        (
            lambda: hardware.compute_bound_batch(1e12, 1e15, 0),
            "bandwidth_bytes_per_s",
        ),
        (
            lambda: hardware.compute_bound_batch(
                1e12, 1e15, 4.8e12, utilization=2
            ),
            "utilization",
        ),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_size_words_drops_trailing_zeros():
    assert fermi.size_words(1e14) == "100 trillion"
    assert fermi.size_words(1e12) == "1 trillion"
    assert fermi.size_words(1.5e12) == "1.5 trillion"
    assert fermi.size_words(30e6) == "30 million"


def test_rate_name_matches_only_the_rate_it_is():
    named = {"FP8": 1.98e15, "BF16": 0.989e15}
    assert fermi.rate_name(1.979e15, named) == "FP8"  # datasheet vs homework
    assert fermi.rate_name(0.989e15, named) == "BF16"
    assert fermi.rate_name(1.5e15, named) is None


def test_fold_words():
    assert fermi.fold(1.0) == "stays the same"
    assert fermi.fold(1.0004) == "stays the same"  # 1.00 at 3 figures
    assert fermi.fold(2.0) == "grows 2.00-fold"
    assert fermi.fold(0.4) == "falls 2.50-fold"  # 1 / 0.4


def _projects():
    import pandas as pd

    return pd.DataFrame(
        {
            "cost_usd": [5e8, 1.5e8, 1.78e11],
            "phrase": ["a 5 nm chip", "the first iPhone", "Apollo"],
        }
    )


def test_compare_cost_picks_the_dearest_project_below():
    phrase, nearest, ratio = fermi.compare_cost(2.1e11, _projects())
    assert (nearest, phrase) == ("Apollo", "1.2 times Apollo")
    assert ratio == pytest.approx(2.1e11 / 1.78e11)
    # a lower-case article stays lower case mid-sentence
    assert fermi.compare_cost(1e9, _projects())[0] == "2.0 times a 5 nm chip"
    below = fermi.compare_cost(1e8, _projects())
    assert below[0] == "less than the first iPhone"
    assert below[2] == pytest.approx(1e8 / 1.5e8)


def test_actor_threshold():
    assert "company" in fermi.actor(1e10, 1e11)
    assert "state" in fermi.actor(1e12, 1e11)


def test_latency_table_by_hand():
    t = fermi.latency_table({"GPT-3": 175e9}, 2, 4.8e12)
    # 350 GB / 4.8 TB/s = 72.9 ms; 60 s / that = 823 tokens per minute
    assert t.loc["GPT-3", "seconds per token"] == pytest.approx(350 / 4800)
    assert t.loc["GPT-3", "tokens per minute"] == pytest.approx(
        60 * 4800 / 350
    )


def test_memory_table_counts_devices():
    t = fermi.memory_table(
        {"1T": 1e12, "100T": 1e14}, 2, {"100 GB": 100e9, "141 GB": 141e9}
    )
    assert list(t["bytes"]) == [2e12, 2e14]
    assert list(t["100 GB"]) == [20, 2000]
    assert list(t["141 GB"]) == [15, 1419]  # ceil(2e14 / 141e9)


def test_text_table_by_hand():
    import pandas as pd

    libraries = pd.Series({"LoC": 25e6})
    t = fermi.text_table({"x": 1.4e15}, 1.4, 400, 300, libraries)
    # 1e15 words / 120,000 words a book
    assert t.loc["x", "words"] == pytest.approx(1e15)
    assert t.loc["x", "books"] == pytest.approx(1e15 / 120_000)
    assert t.loc["x", "/ LoC"] == pytest.approx(1e15 / 120_000 / 25e6)


def test_plots_have_labels_and_marks():
    import numpy as np
    import pandas as pd
    from matplotlib import pyplot as plt

    fig = fermi.plot_latency({"GPT-3": 175e9}, 2, 4.8e12)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.texts[0].get_text()
    b = np.array([1.0, 10.0, 1000.0])
    fig2 = fermi.plot_decode_cost(
        b, {"a": 100 / b, "b": 200 / b}, 0.4, 120, 412, "t"
    )
    assert len(fig2.axes[0].get_lines()) == 5  # 2 curves, floor, price, b*
    fig3 = fermi.plot_costs(pd.Series({"x": 1e9, "y": 1e11}), {"y"}, "t")
    bars = fig3.axes[0].patches
    assert bars[0].get_facecolor() != bars[1].get_facecolor()
    fig4 = fermi.plot_landauer(1.8e-4, 700, 1980)
    assert "10" in fig4.axes[0].get_title()
    for f in (fig, fig2, fig3, fig4):
        assert legible(f)  # issue 20: on a phone and a laptop
        plt.close(f)


def test_plot_two_fits_lines_and_mark():
    import numpy as np
    from matplotlib import pyplot as plt

    c = np.array([1e20, 1e24])
    fig = fermi.plot_two_fits(c, (c, 2 * c), (3 * c, 4 * c), 1e22, "GPT-6")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(fig.axes) == 1 and len(lines) == 5  # 4 curves and the mark
    assert lines[1].get_linestyle() == "--" and lines[0].get_linestyle() == "-"
    assert list(lines[3].get_ydata()) == [4e20, 4e24]  # D, direct fit
    assert lines[4].get_label() == "budget of GPT-6"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    plt.close(fig)
