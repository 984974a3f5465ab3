"""make_algorithm (metaopt/search/__init__.py): lookup by name, what a mutation audit found
unpinned by the other tests (keyword pass-through, exact names, the gp-unavailable error)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

from metaopt._errors import SearchError
from metaopt.search import (
    ALGORITHMS,
    AutoConfig,
    EvolutionConfig,
    SobolStartConfig,
    make_algorithm,
)
from metaopt.search.gp import GPConfig


def test_every_listed_name_builds_the_algorithm_of_that_name() -> None:
    """Pins ALGORITHMS against make_algorithm: the list is what the unknown-name error offers
    the user, so a name missing from it (or one listed but refused) misleads."""
    assert sorted(ALGORITHMS) == ["auto", "evolution", "gp", "random", "sobol"]
    for name in ALGORITHMS:
        assert make_algorithm(name).name == name
    with pytest.raises(SearchError, match="auto, evolution, gp, random, sobol"):
        make_algorithm("tpe")


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("auto", AutoConfig(min_start=7)),
        ("evolution", EvolutionConfig(population=20)),
        ("sobol", SobolStartConfig(min_candidates=64)),
        ("gp", GPConfig(n_init=3)),
    ],
)
def test_keywords_reach_the_algorithm_s_constructor(name: str, config: Any) -> None:
    """Pins **kw pass-through (the docstring's config=EvolutionConfig(population=20)): a
    dropped keyword would silently run the defaults instead of the user's settings."""
    assert make_algorithm(name, config=config).config is config  # type: ignore[attr-defined]


def test_a_keyword_random_search_does_not_take_is_refused_not_ignored() -> None:
    """Random search has no settings: a config given to it is an error, not silently dropped."""
    with pytest.raises(TypeError):
        make_algorithm("random", config=EvolutionConfig())


@pytest.mark.parametrize("name", ["Auto", "GP", "", " auto", "evolution "])
def test_names_are_exact(name: str) -> None:
    """Pins exact matching: the name is replicated in the experiment's spec and every peer
    builds from it, so a spelling one version accepts and another refuses would split peers."""
    with pytest.raises(SearchError, match="unknown algorithm"):
        make_algorithm(name)


def test_an_unimportable_gp_is_a_one_line_search_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the ImportError branch: a broken optional dependency of the GP (an ImportError,
    not only a missing module) gives a SearchError naming the alternatives, which Study and
    the CLI show as one line, not a traceback."""
    real = importlib.import_module

    def broken(name: str, package: str | None = None) -> Any:
        if name == "metaopt.search.gp":
            raise ImportError("cannot import name 'cho_solve' from 'scipy.linalg'")
        return real(name, package)

    with monkeypatch.context() as patch:
        patch.setattr(importlib, "import_module", broken)
        with pytest.raises(SearchError, match=r"gp algorithm is unavailable \(cannot import name"):
            make_algorithm("gp")
    monkeypatch.setitem(sys.modules, "metaopt.search.gp", None)  # not installed at all
    with pytest.raises(SearchError, match="use 'auto' or 'evolution'"):
        make_algorithm("gp")
