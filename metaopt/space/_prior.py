"""Oríon-style prior strings parsed safely (``ast``, literals only) into one-coordinate dimensions.

Grammar: ``uniform(a, b)``, ``loguniform(a, b)``, ``normal(mu, sigma)`` (alias ``gaussian``),
``randint(a, b)`` (b exclusive, as scipy and Oríon), ``choices([...])``, ``choices(x, y, ...)``,
``choices({value: weight, ...})`` and ``fidelity(low, high, base=2)``. Keyword options:
``discrete=True`` (uniform, loguniform, normal: integer values; ``uniform(a, b, discrete=True)``
includes b), ``precision=`` (significant digits of a real value) and ``default_value=``.

Every search dimension is ONE unit-cube coordinate. Reals are linear in the prior's natural scale
(log for loguniform, the normal CDF for normal, so the cube is uniform under the prior); integers
and categoricals of k values own k equal cells and snap to the cell centres.
"""

from __future__ import annotations

import ast
import decimal
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from metaopt._errors import SpaceError

__all__ = ["Dimension", "parse_prior"]

FloatArray = npt.NDArray[np.float64]

_PRIORS = ("uniform", "loguniform", "normal", "randint", "choices", "fidelity")
_ALIASES = {"gaussian": "normal"}
PRIOR_NAMES = (*_PRIORS, *_ALIASES)  # every name a prior is written with
_OPTIONS = {
    "uniform": ("discrete", "precision", "default_value"),
    "loguniform": ("discrete", "precision", "default_value"),
    "normal": ("discrete", "precision", "default_value"),
    "randint": ("default_value",),
    "choices": ("default_value",),
    "fidelity": ("base",),
}
# The normal CDF is clipped so that the cube's faces map to finite values (about ±7 sigma).
_CDF_EPS = 1e-12
# A precision= range of more values than this is taken as endless (it is never used up); one
# of fewer is listed (Dimension.listed_values), so a search and `status` know when it is.
_MAX_LISTED = 1_000_000
# Values of a precision= range closer than this in the unit cube are taken as one (the search
# tells points apart to 1e-9, and far finer the round trip of a value through the cube is not
# exact): such a range counts as endless (uniform(1e-12, 1, precision=1) was called used up
# with 27 of its 109 values, all within 1e-9 of 0, never tried).
_MIN_UNIT_GAP = 1e-8


@dataclass(frozen=True)
class Dimension:
    """One parsed prior: the parameter's name, the prior's kind and its validated arguments.

    ``args`` holds (low, high) for uniform/loguniform/randint/fidelity and (mu, sigma) for normal;
    ``choices``/``weights`` describe a categorical; ``base`` belongs to fidelity only.
    """

    name: str
    prior: str
    args: tuple[float, ...] = ()
    choices: tuple[Any, ...] = ()
    weights: tuple[float, ...] = ()
    discrete: bool = False
    precision: int | None = None
    has_default: bool = False
    default_value: Any = None
    base: float = 2.0

    @property
    def kind(self) -> str:
        """``real``, ``int``, ``cat`` or ``fidelity``."""
        if self.prior == "fidelity":
            return "fidelity"
        if self.prior == "choices":
            return "cat"
        if self.prior == "randint" or self.discrete:
            return "int"
        return "real"

    @property
    def low(self) -> float:
        """First numeric argument: low (mu for normal); 0 for choices."""
        return self.args[0] if self.args else 0.0

    @property
    def high(self) -> float:
        """Second numeric argument: high (sigma for normal; exclusive for randint)."""
        return self.args[1] if self.args else float(len(self.choices))

    @property
    def int_bounds(self) -> tuple[int, int] | None:
        """Inclusive integer range of an integer dimension with finite bounds, else None."""
        if self.prior == "randint":
            return int(self.args[0]), int(self.args[1]) - 1
        if self.discrete and self.prior in ("uniform", "loguniform"):
            return math.ceil(self.args[0]), math.floor(self.args[1])
        return None

    @property
    def n_values(self) -> int | None:
        """How many distinct values the dimension holds; None when unbounded or real."""
        if self.prior == "choices":
            return len(self.choices)
        bounds = self.int_bounds
        return None if bounds is None else bounds[1] - bounds[0] + 1

    @property
    def count(self) -> int | None:
        """How many distinct values the dimension can take, a precision= range's included;
        None when endless (a real, unbounded, or a precision= range that reaches 0 or holds
        more than _MAX_LISTED values)."""
        if self.n_values is not None:
            return self.n_values
        ends = self._digit_range()
        if ends is None:
            return None
        _, (first, m_first), (last, m_last) = ends
        digits = self.precision or 1
        if first == last:
            count = m_last - m_first + 1
        else:  # (each decade between holds every mantissa of its digits)
            whole = 9 * 10 ** (digits - 1)
            count = (10**digits - m_first) + (last - first - 1) * whole
            count += m_last - 10 ** (digits - 1) + 1
        if not 0 < count <= _MAX_LISTED:
            return None
        if count > 1 and self._least_gap(first, digits) < _MIN_UNIT_GAP:
            return None
        return count

    def _least_gap(self, first: int, digits: int) -> float:
        """The least distance in the unit cube between two neighbouring values of a precision=
        range whose lowest magnitude lies in decade ``first``."""
        low, high = self.args
        if self.prior == "uniform":  # (the finest step is at the lowest magnitude)
            return float(10.0 ** (first - digits + 1) / abs(high - low))
        # On a log scale, between the two largest mantissas of a decade.
        return math.log1p(1.0 / (10**digits - 1)) / math.log(high / low)

    @functools.cached_property
    def listed_values(self) -> FloatArray | None:
        """Every value of a bounded precision= real, ascending, as ``decode`` gives them; None
        for any other dimension and when ``count`` is None.

        (Counted as endless, a precision= space was never used up: its search said "nearly
        exhausted" with a point left, and `submit --wait` waited on it for good.)
        """
        ends = self._digit_range()
        if ends is None or self.count is None:
            return None
        sign, (first, m_first), (last, m_last) = ends
        digits = self.precision or 1
        parts = []
        for e in range(first, last + 1):
            lo = m_first if e == first else 10 ** (digits - 1)
            hi = m_last if e == last else 10**digits - 1
            parts.append(np.arange(lo, hi + 1, dtype=np.float64) * 10.0 ** (e - digits + 1))
        # (each the float nearest its decimal, as _snap makes it)
        values = _round_significant(sign * np.concatenate(parts), digits)
        return np.sort(values)

    def _digit_range(self) -> tuple[float, tuple[int, int], tuple[int, int]] | None:
        """A bounded precision= real's sign (a negative range is mirrored), and its lowest
        and highest magnitude as (decade, mantissa of its digits); None for any other
        dimension, or a range that reaches 0 (values of every magnitude have its digits)."""
        if self.precision is None or self.prior not in ("uniform", "loguniform"):
            return None
        if self.int_bounds is not None:
            return None
        low, high = self.args
        if low <= 0.0 <= high:
            return None
        sign = 1.0 if low > 0 else -1.0
        low, high = sorted((sign * low, sign * high))
        # As _snap keeps them: a value rounded past a bound goes to the nearest inside.
        lowest = _round_significant(np.array([low]), self.precision, np.ceil)[0]
        highest = _round_significant(np.array([high]), self.precision, np.floor)[0]
        return sign, _decade(lowest, self.precision), _decade(highest, self.precision)

    @property
    def rungs(self) -> tuple[float, ...]:
        """Fidelity budgets low, low*base, ... up to and including high, as the prior has them.

        Budgets, not steps: fidelity(0.5, 64) starts at half a step (a data fraction, say). The
        early stoppers rank trials at whole steps below the last, these rounded up
        (freezethaw's rung_ladder).
        """
        if self.prior != "fidelity":
            raise SpaceError(f"{self.name}: rungs are defined for fidelity(...) only")
        low, high = self.args
        # Whole bounds and base give whole rungs (1, 3, 9, not 1, 3.0, 9.0), as they were given.
        whole = all(isinstance(v, int) for v in self.args) and self.base == int(self.base)
        base = int(self.base) if whole else self.base
        out = [low]
        while out[-1] * base < high * (1 - 1e-12):
            out.append(out[-1] * base)
        if out[-1] < high:
            out.append(high)
        return tuple(out)

    # -- unit cube ---------------------------------------------------------------------------

    def decode(self, u: FloatArray) -> FloatArray:
        """Unit coordinates (n,) -> numeric values (n,); a categorical's value is its index."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        n_cells = self._cells()
        if n_cells is not None:
            lo = self._cell_origin()
            return lo + np.minimum(np.floor(u * n_cells), n_cells - 1)
        if self.prior == "uniform":
            low, high = self.args
            v = low + u * (high - low)
        elif self.prior == "loguniform":
            low, high = self._log_range()
            v = np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        elif self.prior == "normal":
            mu, sigma = self.args
            from scipy.special import ndtri  # (see encode)

            v = mu + sigma * ndtri(np.clip(u, _CDF_EPS, 1.0 - _CDF_EPS))
        else:
            raise SpaceError(f"{self.name}: {self.prior} is not a search dimension")
        return self._snap(np.asarray(v, dtype=np.float64))

    def encode(self, v: FloatArray) -> FloatArray:
        """Numeric values (n,) -> unit coordinates (n,); inverse of ``decode`` on its image."""
        v = np.asarray(v, dtype=np.float64)
        n_cells = self._cells()
        if n_cells is not None:
            return (v - self._cell_origin() + 0.5) / n_cells
        if self.prior == "uniform":
            low, high = self.args
            u = (v - low) / (high - low)
        elif self.prior == "loguniform":
            low, high = self._log_range()
            # A value at or below 0 (an integer neighbour of the lowest, say) clips to 0, as
            # any value out of range does, without numpy's divide-by-zero warning.
            v = np.maximum(v, np.finfo(np.float64).tiny)
            u = (np.log(v) - math.log(low)) / (math.log(high) - math.log(low))
        elif self.prior == "normal":
            mu, sigma = self.args
            # Imported here, not with the module: every `metaopt` command imports the priors
            # (the fold checks trials against the space), and scipy.special was 0.17 s of
            # each, for a normal prior's search alone.
            from scipy.special import ndtr

            u = ndtr((v - mu) / sigma)
        else:
            raise SpaceError(f"{self.name}: {self.prior} is not a search dimension")
        return np.asarray(np.clip(u, 0.0, 1.0), dtype=np.float64)

    def round(self, u: FloatArray) -> FloatArray:
        """Snap unit coordinates (n,) to representable values; idempotent."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        if self.kind == "real" and self.precision is None:
            return u
        return self.encode(self.decode(u))

    @property
    def weight_edges(self) -> FloatArray | None:
        """A weighted categorical's cells in its prior's CDF, edges (k + 1,) from 0 to 1;
        None for any other dimension, or equal weights (the cube's equal cells are its CDF)."""
        if self.prior != "choices" or len(set(self.weights)) < 2:
            return None
        p = np.asarray(self.weights, dtype=np.float64)
        return np.concatenate([[0.0], np.cumsum(p) / p.sum()])

    def sample_unit(self, rng: np.random.Generator, n: int) -> FloatArray:
        """n rounded unit coordinates (n,) distributed as the prior."""
        if self.prior == "choices" and self.weights:
            p = np.asarray(self.weights, dtype=np.float64)
            idx = rng.choice(len(self.choices), size=n, p=p / p.sum())
            return (idx + 0.5) / len(self.choices)
        return self.round(rng.random(n))

    @functools.cached_property
    def _choice_index(self) -> tuple[dict[tuple[type, Any], int], dict[Any, int]]:
        """Choices (strings, numbers, booleans or None) by (type, value), numbers by value.

        Numbers are keyed as they are, not as floats: int and float hash and compare exactly
        across types, and a float loses integers above 2**53 (2**62 - 1 found 2**62 + 1).
        """
        exact: dict[tuple[type, Any], int] = {}
        numeric: dict[Any, int] = {}
        for i, c in enumerate(self.choices):
            exact.setdefault((type(c), c), i)
            if isinstance(c, int | float) and not isinstance(c, bool):
                numeric.setdefault(c, i)
        return exact, numeric

    def _choice_at(self, value: Any) -> int | None:
        """The index of the choice value is: of its type first, else an equal number (2 for
        2.0, never True for 1). By lookup, not a scan: a replica catching up checks every
        trial's values (100k trials of a 5,000-value choice took 11.6 s scanned)."""
        exact, numeric = self._choice_index
        try:
            found = exact.get((type(value), value))
        except TypeError:  # an unhashable value (a list from a forged record) is none of them
            found = None
        number = isinstance(value, int | float | np.integer | np.floating)
        if found is None and number and not isinstance(value, bool):
            found = numeric.get(value)
        return found

    def to_python(self, x: float) -> Any:
        """A decoded numeric value -> the plain Python value a trial receives."""
        if self.prior == "choices":
            return self.choices[int(x)]
        if self.kind == "int":
            return round(x)
        return float(x)

    def from_python(self, value: Any) -> float:
        """A trial's value -> its numeric value; raises SpaceError if outside the dimension."""
        if self.prior == "choices":
            found = self._choice_at(value)
            if found is None:
                raise SpaceError(
                    f"{self.name}: {_cut(repr(value))} is not one of"
                    f" {_cut(repr(list(self.choices)))}"
                )
            return float(found)
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise SpaceError(
                f"{self.name}: expected a number for {self.to_string()}, got {_cut(repr(value))}"
            )
        try:
            x = float(value)
        except OverflowError:  # an int past float's range (from another peer's record)
            x = math.inf
        if not math.isfinite(x):
            raise SpaceError(f"{self.name}: {_cut(repr(value))} is not finite")
        if self.kind == "int" and x != round(x):
            raise SpaceError(
                f"{self.name}: expected an integer for {self.to_string()}, got {_cut(repr(value))}"
            )
        if not self._contains(x):
            raise SpaceError(f"{self.name}: {_cut(repr(value))} is outside {self.to_string()}")
        return x

    def on_grid(self, value: Any) -> bool:
        """Whether ``value`` is one the search hands out: a value of the dimension that its
        rounding keeps. A default_value= finer than precision= is taken as given and is not
        one: counted as its rounded neighbour, that neighbour was never tried."""
        try:
            x = self.from_python(value)
        except SpaceError:
            return False
        if self.kind != "real" or self.precision is None:
            return True
        # In the unit cube, as Space.round_known tells them: by two measures, a default that
        # one called its grid neighbour and the other not was never tried, nor the space used up.
        u = self.encode(np.array([x]))
        return bool(abs(self.round(u)[0] - u[0]) <= ROUND_OFF)

    def to_string(self) -> str:
        """Canonical prior text; ``parse_prior(name, d.to_string()) == d``."""
        if self.prior == "choices":
            if self.weights:
                body = (
                    "{"
                    + ", ".join(
                        f"{c!r}: {w!r}" for c, w in zip(self.choices, self.weights, strict=True)
                    )
                    + "}"
                )
            else:
                body = repr(list(self.choices))
            parts = [body]
        else:
            parts = [repr(a) for a in self.args]
        if self.prior == "fidelity":
            parts.append(f"base={self.base!r}")
        if self.discrete:
            parts.append("discrete=True")
        if self.precision is not None:
            parts.append(f"precision={self.precision!r}")
        if self.has_default:
            parts.append(f"default_value={self.default_value!r}")
        return f"{self.prior}({', '.join(parts)})"

    def _cells(self) -> int | None:
        if self.prior in ("choices", "randint") or (self.prior == "uniform" and self.discrete):
            return self.n_values
        return None

    def _log_range(self) -> tuple[float, float]:
        bounds = self.int_bounds
        if bounds is None:
            return self.args[0], self.args[1]
        # Widened by half a step so that the end integers get their full share of the log scale.
        return bounds[0] - 0.5, bounds[1] + 0.5

    def _cell_origin(self) -> float:
        bounds = self.int_bounds
        return 0.0 if bounds is None else float(bounds[0])

    def _snap(self, v: FloatArray) -> FloatArray:
        bounds = self.int_bounds
        if bounds is not None:
            return np.clip(np.round(v), bounds[0], bounds[1])
        if self.kind == "int":
            return np.round(v)
        if self.prior != "normal":
            # Round-off of exp/log may step a hair outside the bounds a user wrote.
            v = np.clip(v, self.args[0], self.args[1])
        if self.precision is not None:
            rounded = _round_significant(v, self.precision)
            if self.prior != "normal":
                # Rounded past a bound, a value goes to the nearest one of its digits inside
                # (clipped, it was the bound, with more digits than asked: 0.987, not 0.98).
                low, high = self.args
                rounded = np.where(
                    rounded > high, _round_significant(v, self.precision, np.floor), rounded
                )
                rounded = np.where(
                    rounded < low, _round_significant(v, self.precision, np.ceil), rounded
                )
            v = rounded
        return v

    def _contains(self, x: float) -> bool:
        bounds = self.int_bounds
        if bounds is not None:
            return bounds[0] <= x <= bounds[1]
        if self.prior in ("uniform", "loguniform"):
            low, high = self.args
            slack = 1e-12 * max(abs(low), abs(high))
            return low - slack <= x <= high + slack
        # A discrete normal's integers are exact only within 2**53 (the parser keeps mu +- 40
        # sigma there); 10**300 from another peer's record is no value of it.
        return not self.discrete or abs(x) <= _MAX_EXACT_INT


def _decade(value: float, digits: int) -> tuple[int, int]:
    """A positive float nearest a decimal of ``digits`` significant digits, as (e, m): the
    decimal is m 10**(e - digits + 1), with m of exactly ``digits`` digits. (Read off its
    shortest repr, which is that decimal: division by a power of ten is inexact.)"""
    exact = decimal.Decimal(repr(float(value))).normalize()
    shown = exact.as_tuple()
    assert isinstance(shown.exponent, int)
    mantissa = int("".join(map(str, shown.digits)))
    e = shown.exponent + len(shown.digits) - 1
    return e, mantissa * 10 ** (digits - len(shown.digits))


def _round_significant(
    v: FloatArray, digits: int, how: Callable[[FloatArray], FloatArray] = np.round
) -> FloatArray:
    """v to its first ``digits`` significant digits, rounded by ``how`` (np.round, np.floor
    or np.ceil), each as the float nearest its decimal (912345 -> 900000.0, not
    900000.0000000001).

    Up or down is judged on the floats: the float 0.07 is a hair above the decimal 0.07 (as
    0.07 * 100 is 7.000000000000001), yet rounded up it is 0.07, not 0.08 (a prior of
    uniform(0.07, 0.079, precision=1) was refused as holding no value of one digit).
    """
    out = np.array(v, dtype=np.float64)
    nz = out != 0
    vals = out[nz]
    logs = np.log10(np.abs(vals))
    decade = np.floor(logs)
    # log10 of a value a hair below a power of ten comes out as that power's exponent
    # (log10(0.09999999999999998) is -1.0): its mantissa then lacked a digit, and floored to
    # two digits it was 0.09, not 0.099 (a prior's count fell 9 values short). Where log10
    # came out whole, the decade is checked exactly.
    for i in np.flatnonzero(logs == decade).tolist():
        if decimal.Decimal(abs(float(vals[i]))) < decimal.Decimal(10) ** int(decade[i]):
            decade[i] -= 1
    shift = digits - 1 - decade  # digits to move past the point
    # Powers of ten up to 10**22 are exact floats, so scaling by one and rounding back is
    # exact but for the one rounding of the product; dividing by 10.0**-k (inexact for k > 0)
    # left values a hair off their decimal. Past 10**22 Decimal rounds the few values there.
    near = np.abs(shift) <= 22
    up, given, scale = shift[near] >= 0, vals[near], 10.0 ** np.abs(shift[near])
    mantissa = np.round(np.where(up, given * scale, given / scale))
    nearest = np.where(up, mantissa / scale, mantissa * scale)
    if how is not np.round:
        wrong_side = nearest < given if how is np.ceil else nearest > given
        mantissa += np.where(wrong_side, 1.0 if how is np.ceil else -1.0, 0.0)
        nearest = np.where(up, mantissa / scale, mantissa * scale)
    vals[near] = nearest
    rest = ~near
    vals[rest] = [_round_decimal(x, digits, how) for x in vals[rest].tolist()]
    out[nz] = vals
    return out


def _round_decimal(x: float, digits: int, how: Callable[[FloatArray], FloatArray]) -> float:
    """_round_significant of one value beyond 10**22 either way, in exact decimals."""
    exact = decimal.Decimal(x)
    unit = decimal.Decimal(1).scaleb(exact.adjusted() - digits + 1)
    rounded = exact.quantize(unit, decimal.ROUND_HALF_EVEN)
    if how is np.ceil and float(rounded) < x:
        rounded += unit
    elif how is np.floor and float(rounded) > x:
        rounded -= unit
    return float(rounded)


class _Bad(Exception):
    """Internal: what was expected, turned into one SpaceError line by parse_prior."""


def parse_prior(name: str, text: str) -> Dimension:
    """Parse an Oríon-style prior such as ``loguniform(1e-5, 1)`` for parameter ``name``.

    Args:
        name: the parameter's name, quoted in every error.
        text: the prior; a leading ``~`` (command-line form) is ignored.

    Returns:
        The validated Dimension.

    Raises:
        SpaceError: one line naming the parameter, the text and what was expected.
    """
    if not isinstance(name, str) or not name or name != name.strip() or "\x00" in name:
        # (A NUL can be no argument nor environment value: every peer refuses the record.)
        raise SpaceError(
            f"{name!r}: a parameter name must be a non-empty string without surrounding spaces"
            " or NUL bytes"
        )
    if not isinstance(text, str):
        raise SpaceError(f"{name}: expected a prior string such as 'uniform(0, 1)', got {text!r}")
    # (A prior from another peer may be 100 KB long: its start names it well enough.)
    shown = repr(text) if len(text) <= 200 else f"{text[:200]!r}..."
    try:
        return _parse(name, text)
    except _Bad as exc:
        raise SpaceError(f"{name}: cannot parse {shown}: {exc}") from None
    except (RecursionError, MemoryError):
        # ast gives up on deep nesting ("uniform(" + "1+" * 5000 ...): one experiment record
        # of that made every peer's `metaopt status` and `submit` an internal error.
        raise SpaceError(f"{name}: cannot parse {shown}: it is nested too deeply") from None


def _parse(name: str, text: str) -> Dimension:
    src = text.strip()
    if src.startswith("~"):
        src = src[1:].strip()
    try:
        tree = ast.parse(src, mode="eval")
    except UnicodeEncodeError:
        raise _Bad(
            "it holds a lone surrogate (text decoded with errors='surrogateescape', such as an"
            " undecodable file name); decode it properly first"
        ) from None
    except SyntaxError:
        raise _Bad(
            f"expected one of {', '.join(_PRIORS)} called with literal arguments, separated by"
            " commas: uniform(0, 1)"
        ) from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise _Bad(f"expected a call such as uniform(0, 1); priors are {', '.join(_PRIORS)}")
    prior = _ALIASES.get(call.func.id, call.func.id)
    if prior not in _PRIORS:
        raise _Bad(f"unknown prior {call.func.id!r}; expected one of {', '.join(_PRIORS)}")
    args = [_literal(node, f"argument {i + 1}") for i, node in enumerate(call.args)]
    if prior == "choices" and len(args) == 1 and isinstance(call.args[0], ast.Dict):
        # A dict literal keeps the last of equal keys ({'a': 1, 'a': 2}; {1: 1, True: 2} as
        # 1 == True): refuse them, as the list form refuses a repeated value.
        keys = [_literal(k, "a choice") for k in call.args[0].keys if k is not None]
        if len(keys) != len(args[0]):
            repeat = next(k for i, k in enumerate(keys) if k in keys[:i])
            raise _Bad(f"choices values must be distinct; {repeat!r} repeats as a dict key")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise _Bad("**kwargs are not allowed; write each option as name=value")
        if kw.arg not in _OPTIONS[prior]:
            allowed = ", ".join(_OPTIONS[prior]) or "none"
            raise _Bad(f"{prior} takes no option {kw.arg!r} (options: {allowed})")
        if kw.arg in kwargs:  # (Python's own calls refuse it; the last one silently won)
            raise _Bad(f"option {kw.arg!r} is given twice")
        kwargs[kw.arg] = _literal(kw.value, kw.arg)
    if prior == "choices":
        dim = _choices(name, args)
    elif prior == "fidelity":
        dim = _fidelity(name, args, kwargs)
    else:
        dim = _numeric(name, prior, args, kwargs)
    if "default_value" in kwargs:
        dim = _with_default(dim, kwargs["default_value"])
    return dim


def _literal(node: ast.expr, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _Bad(f"{what} must be a literal (number, string, list or dict)") from None


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise _Bad(f"{what} must be a finite number, got {x!r}")
    return float(x)


def _integer(x: Any, what: str) -> int:
    if isinstance(x, int) and not isinstance(x, bool):
        return x  # exactly: through a float, 2**53 + 1 would pass for 2**53
    v = _number(x, what)
    if v != round(v):
        raise _Bad(f"{what} must be an integer, got {x!r}")
    return int(v)


def _numeric(name: str, prior: str, args: list[Any], kwargs: dict[str, Any]) -> Dimension:
    if len(args) != 2:
        names = "(mu, sigma)" if prior == "normal" else "(low, high)"
        raise _Bad(f"{prior} needs exactly two arguments {names}, got {len(args)}")
    discrete = kwargs.get("discrete", False)
    if not isinstance(discrete, bool):
        raise _Bad(f"discrete must be True or False, got {discrete!r}")
    precision = kwargs.get("precision")
    if precision is not None:
        if (
            isinstance(precision, bool)
            or not isinstance(precision, int)
            or not 1 <= precision <= 15
        ):
            raise _Bad(
                f"precision must be a number of significant digits in 1..15, got {precision!r}"
            )
        if discrete:
            raise _Bad("precision applies to real values only, not with discrete=True")
    if prior == "randint":
        low, high = _integer(args[0], "low"), _integer(args[1], "high")
        if not low < high:
            raise _Bad("randint needs integers low < high (high is exclusive)")
        if max(abs(low), abs(high)) > _MAX_EXACT_INT:
            # Values travel as float64 through the unit cube: past 2**53 they lose digits.
            raise _Bad(f"randint bounds must lie within +-2**53 ({_MAX_EXACT_INT})")
        if high - low > _MAX_EXACT_INT:
            # Cells of the unit cube counted in float64: past 2**53 the top face's cell was
            # high itself, a value outside the prior.
            raise _Bad(f"randint spans at most 2**53 ({_MAX_EXACT_INT}) values")
        return Dimension(name, prior, (low, high))
    a, b = _number(args[0], _arg_name(prior, 0)), _number(args[1], _arg_name(prior, 1))
    if prior == "uniform" and not a < b:
        raise _Bad("uniform needs low < high")
    if prior == "uniform" and not math.isfinite(b - a):
        raise _Bad("uniform needs high - low to be a finite number")
    if prior == "loguniform" and not 0 < a < b:
        raise _Bad("loguniform needs 0 < low < high")
    if prior == "normal" and not b > 0:
        raise _Bad("normal needs sigma > 0")
    if discrete and prior != "normal" and math.ceil(a) > math.floor(b):
        raise _Bad(f"{prior} with discrete=True needs an integer between low and high")
    if (
        discrete
        and max(abs(a), abs(b), abs(a) + 40 * abs(b) * (prior == "normal")) > _MAX_EXACT_INT
    ):
        raise _Bad(f"{prior} with discrete=True needs values within +-2**53 ({_MAX_EXACT_INT})")
    if discrete and prior == "uniform" and math.floor(b) - math.ceil(a) >= _MAX_EXACT_INT:
        raise _Bad(f"uniform with discrete=True spans at most 2**53 ({_MAX_EXACT_INT}) values")
    if precision is not None and prior != "normal":
        low = _round_significant(np.array([a]), precision, np.ceil)[0]
        if low > b:
            raise _Bad(f"no value of {precision} significant digits lies between {a!r} and {b!r}")
    if prior == "normal" and not math.isfinite(abs(a) + 40 * b):
        raise _Bad("normal needs mu +- 40 sigma to be finite numbers")
    return Dimension(name, prior, (a, b), discrete=discrete, precision=precision)


_MAX_EXACT_INT = 2**53


def _arg_name(prior: str, i: int) -> str:
    """The name of a numeric prior's i-th argument, for messages."""
    return ("mu", "sigma")[i] if prior == "normal" else ("low", "high")[i]


def _hashable_literal(x: Any) -> bool:
    if isinstance(x, float):
        return math.isfinite(x)
    return x is None or isinstance(x, str | int | bool)


def _choices(name: str, args: list[Any]) -> Dimension:
    weights: tuple[float, ...] = ()
    if len(args) == 1 and isinstance(args[0], list | tuple):
        values = tuple(args[0])
    elif len(args) == 1 and isinstance(args[0], dict):
        values = tuple(args[0].keys())
        weights = tuple(_number(w, f"weight of {k!r}") for k, w in args[0].items())
        if any(w <= 0 for w in weights) or not math.isfinite(sum(weights)):
            raise _Bad("choices weights must be positive numbers with a finite sum")
    elif len(args) >= 2:
        values = tuple(args)
    else:
        raise _Bad("choices needs a list [a, b, ...] or a dict {value: weight, ...}")
    if not values:
        raise _Bad("choices needs at least one value")
    if not all(_hashable_literal(v) for v in values):
        raise _Bad("choices values must be strings, numbers, booleans or None")
    if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values):
        raise _Bad("choices integers must fit in 64 bits")
    seen: set[tuple[type, Any]] = set()  # by type too: 1, 1.0 and True are three choices
    for v in values:
        if (type(v), v) in seen:
            raise _Bad(f"choices values must be distinct; {v!r} repeats")
        seen.add((type(v), v))
    return Dimension(name, "choices", choices=values, weights=weights)


def _fidelity(name: str, args: list[Any], kwargs: dict[str, Any]) -> Dimension:
    if len(args) != 2:
        raise _Bad(f"fidelity needs (low, high) and optionally base=, got {len(args)} arguments")
    low, high = _number(args[0], "low"), _number(args[1], "high")
    base = _number(kwargs.get("base", 2), "base")
    if not 0 < low < high:
        raise _Bad("fidelity needs 0 < low < high")
    if not base > 1:
        raise _Bad("fidelity needs base > 1")
    if high > _MAX_EXACT_INT:
        raise _Bad(f"fidelity's high end must be at most 2**53 ({_MAX_EXACT_INT}) steps")
    if math.log(high / low) / math.log(base) > 64:
        raise _Bad("fidelity's ladder low, low*base, ... would pass 64 rungs; raise base")
    keep = tuple(int(x) if x == round(x) else x for x in (low, high))
    return Dimension(name, "fidelity", keep, base=float(base))


# How far a known value's unit coordinate may sit from its rounding and still be that rounded
# value (float noise of the round trip through the trial's params), far below any grid step.
# The search's own resolution (DedupeConfig.atol): measured relative to the value instead, a
# default 1e-9 of the range from a grid point (1.0009 in uniform(1, 1e6, precision=1)) was a
# point of its own for the count and that grid point for the search, and submit --wait never
# ended (a review); in the unit cube it is that grid point for both.
ROUND_OFF = 1e-9


def _with_default(dim: Dimension, value: Any) -> Dimension:
    try:
        x = dim.from_python(value)
    except SpaceError:
        raise _Bad(f"default_value {value!r} is not a value of this prior") from None
    if dim.prior == "choices":
        value = dim.choices[int(x)]
    elif dim.kind == "int":
        value = int(x)
    else:
        # (One finer than precision= is handed out as given: refused, the Studies and
        # experiments holding one could no longer be opened or run.)
        value = float(x)
    return Dimension(
        dim.name,
        dim.prior,
        dim.args,
        dim.choices,
        dim.weights,
        dim.discrete,
        dim.precision,
        has_default=True,
        default_value=value,
        base=dim.base,
    )


def _cut(text: str, limit: int = 200) -> str:
    """text, cut to limit characters: a value from another peer's record can be any size."""
    return text if len(text) <= limit else text[:limit] + "..."
