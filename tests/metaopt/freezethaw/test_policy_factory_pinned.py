"""make_stopper and NoStopper (metaopt/freezethaw/_policy.py): what a mutation audit found
unpinned by the other tests (each stopper's config check, exact names, decision order)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from metaopt import MetaoptError
from metaopt.freezethaw import (
    AshaConfig,
    CurveView,
    FreezeThawPolicyConfig,
    MedianConfig,
    make_stopper,
)
from tests.metaopt.freezethaw.test_policy import NAMES, Name, _flat


@pytest.mark.parametrize(
    ("name", "wrong", "needed"),
    [
        ("freeze-thaw", AshaConfig(), "FreezeThawPolicyConfig"),
        ("freeze-thaw", MedianConfig(), "FreezeThawPolicyConfig"),
        ("asha", FreezeThawPolicyConfig(), "AshaConfig"),
        ("median", AshaConfig(), "MedianConfig"),
        ("median", FreezeThawPolicyConfig(), "MedianConfig"),
    ],
)
def test_each_stopper_refuses_another_stopper_s_config(name: Any, wrong: Any, needed: str) -> None:
    """Pins _check on every branch: accepted, a wrong config fails later, at the first
    decision inside a peer, with an AttributeError instead of a clear error at setup."""
    with pytest.raises(MetaoptError, match=f"make_stopper\\('{name}'\\) needs a {needed}"):
        make_stopper(name, wrong)


@pytest.mark.parametrize("config", [AshaConfig(), MedianConfig(), FreezeThawPolicyConfig()])
def test_no_stopper_refuses_a_config(config: Any) -> None:
    """A config handed to "none" is a mistake as a wrong one is for the others (it was dropped
    in silence): the early stopping meant is not the one running."""
    with pytest.raises(MetaoptError, match=r"make_stopper\('none'\) takes no config, got "):
        make_stopper("none", config)


@pytest.mark.parametrize("name", ["freezethaw", "freeze_thaw", "ASHA", "None", ""])
def test_stopper_names_are_exact(name: str) -> None:
    """Pins exact names: every peer builds the stopper from the replicated spec's name."""
    with pytest.raises(MetaoptError, match="unknown early stopper"):
        make_stopper(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_decisions_come_in_trial_id_order_whatever_the_curves_order(name: Name) -> None:
    """Pins the sort by trial id (NoStopper as the others): the same trials given in another
    order (replicas list them in arrival order) give the same decision list."""
    curves: list[CurveView] = [_flat(t, 0.3, 2, 0.1 * i) for i, t in enumerate("dbca")]
    own = {c.trial_id for c in curves}
    out = make_stopper(name).decide(curves, own, 0, np.random.default_rng(0))
    again = make_stopper(name).decide(curves[::-1], own, 0, np.random.default_rng(0))
    assert [d.trial_id for d in out] == ["a", "b", "c", "d"]
    assert out == again
