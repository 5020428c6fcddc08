"""Number formatting for glued prose: scientific notation, money, bytes,
durations.

Every number in the book's prose is produced by one of these functions from a
computed value, so the rounding rules live in one place.
"""

from __future__ import annotations

import decimal
import math

from llmbook.core.validate import as_float, positive_int

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sig(x: float, digits: int = 3) -> str:
    """Round ``x`` to ``digits`` significant figures and print it plainly, with
    thousands separators.

    >>> sig(1234.5678, 3)
    '1,230'
    >>> sig(0.0012345, 2)
    '0.0012'
    """
    x = as_float("x", x)
    digits = positive_int("digits", digits)
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    places = (
        digits - 1 - exponent
    )  # may be negative: round(66182, -2) == 66200
    rounded = round(x, places)
    # Rounding can carry into a new power of ten (9.99 -> 10.0): one decimal
    # fewer then.
    if rounded != 0 and math.floor(math.log10(abs(rounded))) != exponent:
        places -= 1
        rounded = round(x, places)
    decimals = max(places, 0)
    rounded = int(rounded) if decimals == 0 else rounded
    return f"{rounded:,.{decimals}f}"


def sci(x: float, digits: int = 2) -> str:
    """Scientific notation with a Unicode exponent, e.g. ``sci(1.7e15) == '1.7
    × 10¹⁵'``.

    Numbers between 0.01 and 10 000 are printed plainly (``sig``), which reads
    better in prose.
    """
    x = as_float("x", x)
    digits = positive_int("digits", digits)
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return sig(x, digits)
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    exp = str(int(exponent)).translate(_SUPERSCRIPT)
    if float(mantissa) in (1.0, -1.0) and digits <= 2:
        return f"{'-' if x < 0 else ''}10{exp}"
    return f"{mantissa} × 10{exp}"


def exact(x: float, digits: int = 3, max_sig: int = 8) -> str:
    """A binary floating-point value shown exactly where that is short.

    Every finite float is a finite decimal. If that decimal has at most
    ``max_sig`` significant digits it is printed in full (``exact(65504.0)
    == '65,504'``, ``exact(2.0**-7) == '0.0078125'``); otherwise an exact
    power of two is printed as one with its rounded value (``exact(2.0**-14)
    == '2⁻¹⁴ ≈ 6.1 × 10⁻⁵'`` with ``digits=2``), and anything else as
    ``'≈ '`` followed by ``sci(x, digits)``. For format limits such as the
    largest FP16 number, which ``sci`` would round to 6.55 × 10⁴.
    """
    x = as_float("x", x)
    digits = positive_int("digits", digits)
    max_sig = positive_int("max_sig", max_sig)
    if x == 0:
        return "0"
    # Decimal(float) is exact; a wide context keeps normalize() exact too
    d = decimal.Context(prec=1100).normalize(decimal.Decimal(x))
    if len(d.as_tuple().digits) <= max_sig:
        return format(d, ",f")
    mantissa, exponent = math.frexp(abs(x))
    if mantissa == 0.5:
        power = str(exponent - 1).translate(_SUPERSCRIPT)
        sign = "-" if x < 0 else ""
        return f"{sign}2{power} ≈ {sci(x, digits)}"
    return f"≈ {sci(x, digits)}"


_SCALES = [(1e12, "trillion"), (1e9, "billion"), (1e6, "million")]


def words(x: float, digits: int = 3) -> str:
    """Large counts in words: ``words(2.1e11) == '210 billion'``; small ones
    via ``sig``.
    """
    x = as_float("x", x)
    for scale, name in _SCALES:
        if abs(x) >= scale:
            if abs(x) >= 1000 * _SCALES[0][0]:
                return sci(x, digits)
            return f"{sig(x / scale, digits)} {name}"
    return sig(x, digits)


def usd(x: float, digits: int = 3) -> str:
    """US dollars in words: ``usd(2.1e11) == '210 billion USD'``,
    ``usd(18.18) == '18.2 USD'``.
    """
    return f"{words(x, digits)} USD"


_BYTE_UNITS = [
    (1e18, "EB"),
    (1e15, "PB"),
    (1e12, "TB"),
    (1e9, "GB"),
    (1e6, "MB"),
    (1e3, "kB"),
]


def nbytes(x: float, digits: int = 3) -> str:
    """Bytes with decimal SI prefixes (1 GB = 10⁹ B, as GPU and disk vendors
    count).
    """
    x = as_float("x", x)
    for scale, unit in _BYTE_UNITS:
        if abs(x) >= scale:
            return f"{sig(x / scale, digits)} {unit}"
    return f"{sig(x, digits)} B"


def duration(seconds: float, digits: int = 3) -> str:
    """A duration in the largest unit that keeps the number >= 1 (s, min, h,
    days, years).
    """
    s = as_float("seconds", seconds)
    for scale, unit in [
        (365.25 * 86400, "years"),
        (86400, "days"),
        (3600, "hours"),
        (60, "minutes"),
    ]:
        if abs(s) >= scale:
            return f"{sig(s / scale, digits)} {unit}"
    return f"{sig(s, digits)} s"


def pct(x: float, digits: int = 2) -> str:
    """A fraction as a percentage: ``pct(0.0103) == '1.0 %'``."""
    return f"{sig(100 * as_float('x', x), digits)} %"


def span(interval, digits: int = 2) -> str:
    """An interval as prose, both ends to ``digits`` significant figures:
    ``span({"lo": 0.8761, "hi": 1.204}) == "0.88 to 1.2"``; takes the dicts
    of :mod:`llmbook.core.stats` or a ``(lo, hi)`` pair."""
    lo, hi = (
        (interval["lo"], interval["hi"])
        if isinstance(interval, dict)
        else interval
    )
    return f"{sig(lo, digits)} to {sig(hi, digits)}"


def matrix(m) -> str:
    """A small matrix as prose: its rows in parentheses, each entry as
    ``str`` writes it: ``matrix([[1, -2], [0, 3]]) == "(1, -2), (0, 3)"``.

    Args:
        m: rows, each a sequence of numbers or strings (e.g.
            ``tensor.tolist()``). Used for the 4 x 4 example of
            formats-linear.
    """
    return ", ".join("(" + ", ".join(str(v) for v in r) + ")" for r in m)


def vector(values) -> str:
    """A short vector of non-negative values as prose, in brackets: zero and
    entries above 10^-3 at 3 significant figures (:func:`sig`), smaller ones
    in powers of ten (:func:`sci`, 2 figures), NaN as ``"NaN"``.

    Example: ``vector([0.5, 2e-5, float("nan")])`` is
    ``"[0.500, 2.0 × 10⁻⁵, NaN]"``.
    Used for the float16 softmax of formats-mixed-precision.
    """
    return (
        "["
        + ", ".join(
            "NaN" if v != v else sig(v, 3) if v == 0 or v > 1e-3 else sci(v, 2)
            for v in values
        )
        + "]"
    )


def _minus(text: str) -> str:
    # a typographic minus for a leading sign ("-0.3" -> "−0.3")
    return "\u2212" + text[1:] if text.startswith("-") else text


def median_range(
    values,
    show=None,
    *,
    sep: str = " to ",
    prefix: str = "",
    when_equal: str | None = None,
) -> str:
    """The book's one prose form of a summary over seeds or draws:
    ``"median (smallest to largest)"``, e.g. ``"0.26 (0.24 to 0.28)"``.

    Args:
        values: one number per seed or draw (1-D, finite).
        show: writes one number (default: :func:`sig` to 2 figures); a
            leading ``-`` becomes a typographic minus.
        sep: between the two ends (``"–"`` for ``"0.26 (0.24–0.28)"``).
        prefix: before the smaller end (``"range "`` for ``"(range a to
            b)"``).
        when_equal: what follows the median when both ends are written
            alike (e.g. ``" (every seed)"``; ``""`` for the median alone);
            ``None`` writes the range anyway.
    A single value is written alone. Used by every notebook that reports
    seeds (induction-trained, cost-mup, cost-isoflop, moe-routing, LoRA,
    batch size, number formats).
    """
    from llmbook.core.stats import median_range as summary

    show = show or (lambda x: sig(x, 2))
    m = summary(values)
    med, lo, hi = (_minus(show(m[k])) for k in ("median", "lo", "hi"))
    if m["n"] == 1:
        return med
    if when_equal is not None and lo == hi:
        return med + when_equal
    return f"{med} ({prefix}{lo}{sep}{hi})"
