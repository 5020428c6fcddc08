"""Fermi estimates for large models: memory, storage, bandwidth, compute,
money, energy.

Each function is one line of arithmetic with its units spelled out, so a
notebook can chain them and a reader can check any step. Derived in the chapter
"Fermi estimation for a 100-trillion-parameter model" (hw11-q5). Units: bytes,
seconds, FLOP, USD, joules.
"""

from __future__ import annotations

import math
import re

import numpy as np


from llmbook.core.validate import positive

BOLTZMANN = 1.380649e-23  # J/K, exact in the 2019 SI
MEGABYTE = 1e6  # bytes; storage prices in the source are per decimal megabyte


def storage_cost_per_year(
    total_bytes: float, usd_per_megabyte: float, lifetime_years: float = 1.0
) -> float:
    """Yearly cost (USD) of storage at ``usd_per_megabyte``, replaced every
    ``lifetime_years``.
    """
    megabytes = positive("total_bytes", total_bytes) / MEGABYTE
    price = positive("usd_per_megabyte", usd_per_megabyte)
    return megabytes * price / positive("lifetime_years", lifetime_years)


def tokens_per_minute(seconds_per_token: float) -> float:
    """Tokens produced in one minute of strictly sequential (autoregressive)
    decoding.
    """
    return 60.0 / positive("seconds_per_token", seconds_per_token)


def landauer_joules(
    bits_erased: float = 1.0, temperature_k: float = 300.0
) -> float:
    """Minimum energy (J) to erase ``bits_erased`` bits at
    ``temperature_k``: k_B T ln 2 per bit.
    """
    per_bit = (
        BOLTZMANN * positive("temperature_k", temperature_k) * math.log(2)
    )
    return positive("bits_erased", bits_erased) * per_bit


def words_from_tokens(n_tokens: float, tokens_per_word: float = 1.4) -> float:
    """English words in ``n_tokens`` tokens at ``tokens_per_word``."""
    return positive("n_tokens", n_tokens) / positive(
        "tokens_per_word", tokens_per_word
    )


def geometric_mean(low: float, high: float) -> float:
    """sqrt(low * high): the midpoint of a range on a log scale."""
    return math.sqrt(positive("low", low) * positive("high", high))


def size_words(n: float) -> str:
    """A parameter count in words without trailing zeros: ``1e14`` ->
    ``"100 trillion"``, ``1.5e12`` -> ``"1.5 trillion"``.
    """
    from llmbook.book import fmt

    text = fmt.words(positive("n", n))
    return re.sub(r"\.?0+ ", " ", text) if "." in text else text


def rate_name(rate: float, named: dict, rtol: float = 0.01) -> str | None:
    """The name in ``named`` (name -> FLOP/s) whose rate ``rate`` matches to
    ``rtol``, or None: which precision a FLOP rate is the peak of, so a
    sentence can say "FP8" or "BF16" only when it is true.
    """
    r = positive("rate", rate)
    for name, value in named.items():
        if math.isclose(r, positive(f"named[{name!r}]", value), rel_tol=rtol):
            return name
    return None


def fold(ratio: float, digits: int = 3) -> str:
    """How a quantity changes by ``ratio`` (new / old), in words:
    ``"grows 2.00-fold"``, ``"falls 2.50-fold"``, or ``"stays the same"``
    when the ratio rounds to 1 at ``digits`` significant figures.
    """
    from llmbook.book import fmt

    r = positive("ratio", ratio)
    if fmt.sig(r, digits) == fmt.sig(1.0, digits):
        return "stays the same"
    if r > 1:
        return f"grows {fmt.sig(r, digits)}-fold"
    return f"falls {fmt.sig(1 / r, digits)}-fold"


def compare_cost(cost: float, projects) -> tuple[str, str, float]:
    """Place ``cost`` (USD) among ``projects`` (a DataFrame with columns
    ``cost_usd`` and ``phrase``, e.g. ``data/megaprojects.csv``): the most
    expensive project that costs no more, as ``("1.2 times the Apollo
    Program", "the Apollo Program", 1.18)``; below every project,
    ``("less than the first iPhone", ...)`` with the cheapest.
    """
    from llmbook.book import fmt

    c = positive("cost", cost)
    ranked = projects.sort_values("cost_usd")
    below = ranked[ranked["cost_usd"] <= c]
    if below.empty:
        first = ranked.iloc[0]
        return f"less than {first.phrase}", first.phrase, c / first.cost_usd
    top = below.iloc[-1]
    ratio = c / top.cost_usd
    return f"{fmt.sig(ratio, 2)} times {top.phrase}", top.phrase, ratio


def actor(cost: float, company_budget_usd: float) -> str:
    """Whose project a cost of ``cost`` USD is, against the yearly investment
    ``company_budget_usd`` of the largest companies (part (h))."""
    if positive("cost", cost) > positive(
        "company_budget_usd", company_budget_usd
    ):
        return "the scale of a state, more than any company invests in a year"
    return "within the yearly investment of a large company"


def latency_table(models: dict, bytes_per_param: float, bandwidth: float):
    """Memory-bound decoding for each model (name -> parameters) on one
    device: a DataFrame with ``parameters``, ``seconds per token`` (every
    weight streamed once at ``bandwidth`` bytes/s) and ``tokens per
    minute``. Part (g).
    """
    import pandas as pd

    n = np.array(list(models.values()), dtype=float)
    seconds = n * positive("bytes_per_param", bytes_per_param)
    seconds = seconds / positive("bandwidth", bandwidth)
    return pd.DataFrame(
        {
            "parameters": n,
            "seconds per token": seconds,
            "tokens per minute": 60.0 / seconds,
        },
        index=list(models),
    )


def memory_table(sizes: dict, bytes_per_param: float, devices: dict):
    """Bytes of weights for each model (name -> parameters) and the devices
    needed to hold them, one column per entry of ``devices`` (column name ->
    bytes per device, rounded up). Part (e).
    """
    import pandas as pd

    from llmbook.core import accounting, hardware

    table = pd.DataFrame(
        {"parameters": list(sizes.values())}, index=list(sizes)
    )
    table["bytes"] = [
        accounting.model_bytes(n, bytes_per_param) for n in sizes.values()
    ]
    for column, per_device in devices.items():
        table[column] = [
            hardware.devices_needed(b, per_device) for b in table["bytes"]
        ]
    return table


def text_table(
    corpora: dict,
    tokens_per_word: float,
    words_per_page: float,
    pages_per_book: float,
    libraries,
):
    """Each corpus (name -> tokens) in words and books, and as a multiple of
    each collection in ``libraries`` (a Series: name -> books). Part (d).
    """
    import pandas as pd

    table = pd.DataFrame(
        {"tokens": list(corpora.values())}, index=list(corpora)
    )
    table["words"] = [
        words_from_tokens(t, tokens_per_word) for t in table["tokens"]
    ]
    per_book = positive("words_per_page", words_per_page) * positive(
        "pages_per_book", pages_per_book
    )
    table["books"] = table["words"] / per_book
    for name, books in libraries.items():
        table[f"/ {name}"] = table["books"] / positive("books", books)
    return table


def plot_latency(models: dict, bytes_per_param: float, bandwidth: float):
    """Memory-bound seconds per token (left axis) and tokens per minute
    (right axis) against model size, 1e9 to 1e15 parameters, with each of
    ``models`` (name -> parameters) marked. Part (g). Returns the figure.
    """
    from llmbook.book.plotting import new_axes

    sweep = np.logspace(9, 15, 61)
    seconds = sweep * bytes_per_param / positive("bandwidth", bandwidth)
    fig, ax = new_axes(
        "parameters N",
        "seconds per token (memory-bound floor)",
        "Decoding latency grows linearly with model size",
        logx=True,
        logy=True,
    )
    ax.plot(sweep, seconds, label="seconds per token")
    ax2 = ax.twinx()
    ax2.plot(
        sweep, 60 / seconds, color="C1", ls="--", label="tokens per minute"
    )
    ax2.set_yscale("log")
    ax2.set_ylabel("tokens per minute, one sequence")
    ax2.grid(False)
    for name, n in models.items():
        t = n * bytes_per_param / bandwidth
        ax.plot(n, t, "o", color="C0")
        ax.annotate(
            name,
            (n, t),
            textcoords="offset points",
            xytext=(-8, 6),
            ha="right",
            fontsize=9,
        )
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.88), fontsize=9)
    return fig


def plot_decode_cost(
    batches,
    curves: dict,
    floor: float,
    price: float,
    b_meet: float,
    title: str,
):
    """Rental USD per million decoded tokens against the batch, one line per
    entry of ``curves`` (label -> costs at ``batches``), with the FLOP-bound
    ``floor``, the selling ``price`` and the ridge batch ``b_meet`` marked.
    Part (j). Returns the figure.
    """
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "batch size b (sequences decoded together)",
        "USD per million tokens",
        title,
        logx=True,
        logy=True,
    )
    for (label, cost), style in zip(curves.items(), ["-", "--", "-."]):
        ax.plot(batches, cost, style, label=label)
    ax.axhline(
        floor,
        color="grey",
        lw=1,
        ls=":",
        label=f"FLOP-bound estimate of (j): {floor:.2g} USD",
    )
    ax.axhline(price, color="black", lw=1, label=f"price: {price:,} USD")
    ax.axvline(b_meet, color="C0", lw=1, ls=":")
    ax.annotate(
        f"b* = {b_meet:.0f}",
        (b_meet, floor),
        xytext=(6, 34),
        textcoords="offset points",
        fontsize=9,
    )
    ax.legend(fontsize=9, loc="center right")
    return fig


def plot_costs(costs, ours, title: str):
    """Horizontal bars of ``costs`` (a Series: label -> USD, log scale), the
    labels in ``ours`` in a second colour. Part (h). Returns the figure.
    """
    from llmbook.book.plotting import new_axes

    costs = costs.sort_values()
    fig, ax = new_axes(
        "cost (USD, log scale)",
        "project",
        title,
        logx=True,
        figsize=(5.4, 4.6),
    )
    colours = ["C3" if p in ours else "C0" for p in costs.index]
    ax.barh(costs.index, costs.values, color=colours)
    ax.grid(axis="y", visible=False)
    # the powers of ten large enough to read on a phone
    ax.tick_params(axis="x", labelsize=13)
    return fig


def plot_landauer(floor_w: float, actual_w: float, tflops: float):
    """Two bars: the Landauer power ``floor_w`` (W) at ``tflops`` TFLOP/s
    against the device's ``actual_w``, log scale. Part (k).
    """
    from llmbook.book import fmt
    from llmbook.book.plotting import new_axes

    ratio = positive("actual_w", actual_w) / positive("floor_w", floor_w)
    fig, ax = new_axes(
        "power (W, log scale)",
        f"at {tflops:,.0f} TFLOP/s",
        f"An H200 draws {fmt.sci(ratio, 2)} times the Landauer minimum",
        logx=True,
        figsize=(5.2, 2.6),
    )
    ax.barh(
        ["Landauer minimum", "H200 actual"],
        [floor_w, actual_w],
        color=["C2", "C3"],
    )
    ax.grid(axis="y", visible=False)
    return fig


def plot_two_fits(budgets, closed: tuple, direct: tuple, c_mark, label: str):
    """Compute-optimal N and D against the budget C, log-log: the closed
    form of the loss fit (``closed = (N, D)`` at ``budgets``, solid) and the
    direct fit (``direct = (N, D)``, dashed), with a vertical line at
    ``c_mark`` labelled "budget of ``label``". Part (b). Returns the figure.
    """
    from llmbook.book.plotting import new_axes

    (n3, d3), (nd, dd) = closed, direct
    fig, ax = new_axes(
        "training compute C (FLOP)",
        "parameters N or tokens D",
        "Compute-optimal N and D: two fits diverge",
        logx=True,
        logy=True,
    )
    ax.plot(budgets, n3, label="N_opt, closed form (approach 3)")
    ax.plot(budgets, nd, "--", label="N_opt, direct fit")
    ax.plot(budgets, d3, label="D_opt, closed form (approach 3)")
    ax.plot(budgets, dd, "--", label="D_opt, direct fit")
    ax.axvline(c_mark, color="grey", lw=1, label=f"budget of {label}")
    ax.legend(fontsize=9)
    return fig
