"""A search space: named dimensions and the two-way map between trial params and the unit cube."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from metaopt._errors import SpaceError
from metaopt.space._prior import ROUND_OFF, Dimension, parse_prior

__all__ = ["Space"]

FloatArray = npt.NDArray[np.float64]


class Space:
    """Search dimensions sorted by name (one unit-cube coordinate each) plus an optional fidelity.

    Equal spaces have equal ``to_dict()``; the canonical strings round-trip through ``from_dict``.
    """

    __slots__ = ("_dims", "fidelity")

    def __init__(self, dimensions: Iterable[Dimension]) -> None:
        dims = list(dimensions)
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SpaceError(
                f"parameter {dup[0]!r} is defined twice; give each parameter one prior"
            )
        fid = [d for d in dims if d.kind == "fidelity"]
        if len(fid) > 1:
            raise SpaceError(
                f"{fid[1].name}: only one fidelity(...) dimension is allowed, {fid[0].name} is one"
            )
        self.fidelity: Dimension | None = fid[0] if fid else None
        self._dims: tuple[Dimension, ...] = tuple(
            sorted((d for d in dims if d.kind != "fidelity"), key=lambda d: d.name)
        )

    @classmethod
    def from_dict(cls, priors: Mapping[str, str | Dimension]) -> Space:
        """Build a space from ``{name: prior string or Dimension}``.

        Args:
            priors: e.g. ``{"lr": "loguniform(1e-5, 1)", "act": "choices(['relu', 'tanh'])"}``.

        Returns:
            The space; raises SpaceError naming the first malformed parameter.
        """
        if not isinstance(priors, Mapping):
            raise SpaceError(
                f"a space must be a mapping of name to prior string, got {type(priors).__name__}"
            )
        dims = []
        for name, prior in priors.items():
            if isinstance(prior, Dimension):
                if prior.name != name:
                    raise SpaceError(
                        f"{name}: the Dimension is named {prior.name!r}; use the same name"
                    )
                dims.append(prior)
            else:
                dims.append(parse_prior(name, prior))
        return cls(dims)

    def to_dict(self) -> dict[str, str]:
        """Canonical ``{name: prior string}``, fidelity included."""
        out = {d.name: d.to_string() for d in self._dims}
        if self.fidelity is not None:
            out[self.fidelity.name] = self.fidelity.to_string()
        return dict(sorted(out.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def __repr__(self) -> str:
        return f"Space({self.to_dict()!r})"

    def __iter__(self) -> Iterator[Dimension]:
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __getitem__(self, name: str) -> Dimension:
        for d in self._dims:
            if d.name == name:
                return d
        if self.fidelity is not None and self.fidelity.name == name:
            return self.fidelity
        raise KeyError(name)

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        """Search dimensions in coordinate order."""
        return self._dims

    @property
    def fidelity_name(self) -> str | None:
        """Name of the fidelity dimension, if any."""
        return None if self.fidelity is None else self.fidelity.name

    def max_step_conflict(self, max_step: int | None) -> str | None:
        """Why max_step contradicts the fidelity prior (None if it does not): a trial runs to
        the fidelity value it is given, and the stoppers' rungs come from that prior.

        Below its high end, every trial past max_step looked "at its budget" and was never
        stopped; above it, the stoppers waited for steps no trial reaches.
        """
        steps = self.fidelity_steps
        if max_step is None or steps is None or max_step == steps:
            return None
        assert self.fidelity is not None
        return (
            f"{max_step} disagrees with the fidelity prior of {self.fidelity.name!r}, whose"
            f" trials run to step {steps}; leave it out (the fidelity sets it)"
        )

    @property
    def fidelity_steps(self) -> int | None:
        """The step a trial runs to by its fidelity prior: its high end, when that is a whole
        number above 1. A fidelity up to 1 or fractional (a share of the data, say) is no step,
        and sets neither the last step nor the stoppers' rungs."""
        if self.fidelity is None:
            return None
        high = float(self.fidelity.args[1])
        return int(high) if high > 1 and high.is_integer() else None

    @property
    def names(self) -> tuple[str, ...]:
        """Search dimension names in coordinate order (sorted), fidelity excluded."""
        return tuple(d.name for d in self._dims)

    @property
    def d(self) -> int:
        """Unit-cube width."""
        return len(self._dims)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Per coordinate: ``real``, ``int`` or ``cat``."""
        return tuple(d.kind for d in self._dims)

    @property
    def n_values(self) -> tuple[int | None, ...]:
        """Per coordinate: distinct values of a bounded int or cat, else None."""
        return tuple(d.n_values for d in self._dims)

    @property
    def cardinality(self) -> int | None:
        """Number of distinct points when every coordinate is finite (a precision= range's
        too, see Dimension.count), else None."""
        total = 1
        for dim in self._dims:
            k = dim.count
            if k is None:
                return None
            total *= k
        return total

    @property
    def defaults(self) -> dict[str, Any]:
        """The ``default_value=`` options that were given, by name."""
        return {d.name: d.default_value for d in self._dims if d.has_default}

    def to_unit(self, params: Mapping[str, Any]) -> FloatArray:
        """Trial params -> unit-cube point (d,); the fidelity key, if present, is ignored.

        Raises:
            SpaceError: a parameter is missing, unknown, or outside its prior.
        """
        extra = set(params) - set(self.names)
        if self.fidelity is not None:
            extra.discard(self.fidelity.name)
        if extra:
            raise SpaceError(
                f"{sorted(extra)[0]}: not a parameter of this space {list(self.names)}"
            )
        u = np.empty(self.d, dtype=np.float64)
        for i, dim in enumerate(self._dims):
            if dim.name not in params:
                raise SpaceError(
                    f"{dim.name}: missing from params; every search parameter needs a value"
                )
            x = dim.from_python(params[dim.name])
            u[i] = dim.encode(np.array([x]))[0]
        return u

    def from_unit(self, u: FloatArray) -> dict[str, Any]:
        """Unit-cube point (d,) -> plain Python params (float, int, str, bool, None)."""
        u = np.asarray(u, dtype=np.float64).reshape(-1)
        if u.shape[0] != self.d:
            raise SpaceError(f"expected a unit-cube point of width {self.d}, got {u.shape[0]}")
        return {
            dim.name: dim.to_python(float(dim.decode(u[i : i + 1])[0]))
            for i, dim in enumerate(self._dims)
        }

    def round_unit(self, U: FloatArray) -> FloatArray:
        """Snap points (n, d) to representable values (ints/cats at cell centres); idempotent."""
        U = np.atleast_2d(np.asarray(U, dtype=np.float64))
        if U.shape[1] != self.d:
            raise SpaceError(f"expected unit-cube points of width {self.d}, got {U.shape[1]}")
        out = np.empty_like(U)
        for i, dim in enumerate(self._dims):
            out[:, i] = dim.round(U[:, i])
        return out

    def round_known(self, U: FloatArray) -> FloatArray:
        """Known points (n, d) rounded as round_unit, but for a precision= value its rounding
        moves (a default_value= finer than its precision, taken as given): kept where it is,
        for its rounded neighbour is a point no trial tried. (An int or a category is its
        cell, wherever in the cell it is given.)"""
        U = np.atleast_2d(np.asarray(U, dtype=np.float64))
        if U.shape[0] == 0:
            return np.zeros((0, self.d))
        rounded = self.round_unit(U)
        for i, dim in enumerate(self._dims):
            if dim.kind == "real" and dim.precision is not None:
                moved = np.abs(rounded[:, i] - U[:, i]) > ROUND_OFF
                rounded[moved, i] = U[moved, i]
        return rounded

    def from_prior_cdf(self, C: FloatArray) -> FloatArray:
        """Points (n, d) in the priors' CDF space -> rounded unit-cube points. The cube is that
        space but for weighted categoricals, whose cells there are as wide as their weights
        (uniform draws there follow the weights; in the cube every choice has an equal cell)."""
        U = np.array(np.atleast_2d(C), dtype=np.float64)
        for i, dim in enumerate(self._dims):
            edges = dim.weight_edges
            if edges is not None:
                idx = np.clip(np.searchsorted(edges, U[:, i], side="right") - 1, 0, len(edges) - 2)
                U[:, i] = (idx + 0.5) / (len(edges) - 1)
        return self.round_unit(U)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """n points (n, d) drawn from the priors, rounded."""
        out = np.empty((n, self.d), dtype=np.float64)
        for i, dim in enumerate(self._dims):
            out[:, i] = dim.sample_unit(rng, n)
        return out

    def grid(self, limit: int = 100_000) -> FloatArray:
        """Every point (N, d) of a finite space of at most ``limit`` points, lexicographically."""
        card = self.cardinality
        if card is None or card > limit:
            raise SpaceError(
                f"the space has {card or 'infinitely many'} points; cannot list more than {limit}"
            )
        # Each value's own coordinate: a discrete loguniform's values are spaced on a log
        # scale, not k equal cells, and cell centres named some integers twice and others
        # never (31 of 1000 left out: the space was called exhausted with points left).
        axes = []
        for dim in self._dims:  # (a choice's value is its index)
            if dim.listed_values is not None:
                axes.append(dim.encode(dim.listed_values))
                continue
            bounds = (0, len(dim.choices) - 1) if dim.prior == "choices" else dim.int_bounds
            assert bounds is not None  # (in a finite space every dimension is)
            axes.append(dim.encode(np.arange(bounds[0], bounds[1] + 1, dtype=np.float64)))
        if not axes:
            return np.zeros((1, 0))
        return np.array(list(itertools.product(*axes)), dtype=np.float64)
