"""The candidates ``mma tune`` tries for a method: its published values first, then draws from its own search space.

Every method declares its search space (:attr:`~mma.adapters.method_base.MethodBase.search_space`): a list of
values per option, or per group of options that only make sense together (CoOp's context length and its
initialisation words). A budget of N candidates is the published point (the values the method runs at when
nothing is tuned) and N - 1 distinct points drawn without replacement from the grid by scikit-learn's
:class:`~sklearn.model_selection.ParameterSampler`, so every method gets the same number of trainings through the
same search. A method with no space (the zero-shot model, the linear probe, which chooses its C on the few-shot
validation images itself) has one candidate: its published point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sklearn.model_selection import ParameterSampler

from mma.errors import MmaError

from .method_base import MethodBase

__all__ = ["flatten", "candidates", "space_size"]


def flatten(point: Mapping) -> dict:
    """One candidate's training values: grouped options (a dict value) spread into their fields."""
    out: dict = {}
    for name, value in point.items():
        out.update(value if isinstance(value, Mapping) else {name: value})
    return out


def space_size(method: type[MethodBase]) -> int:
    """How many points the method's grid has (1: only its published point)."""
    return math.prod(len(v) for v in method.search_space.values()) if method.search_space else 1


def candidates(method: type[MethodBase], budget: int, base: Mapping, *, seed: int = 0) -> list[dict]:
    """*budget* candidates of *method*, each the values of its search space's fields (flat): the point of *base*
    (the values it runs at untuned) first, then distinct draws from the grid.

    Fewer come back when the grid holds fewer points; with no search space, only the first.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise MmaError(f"--budget {budget!r} is not valid; give the number of candidates, a whole number >= 1.")
    fields = list(dict.fromkeys(f for name, v in method.search_space.items() for p in v for f in flatten({name: p})))
    first = {f: base[f] for f in fields if f in base}
    out = [first]
    if not method.search_space or budget == 1:
        return out
    # one more than needed, in case the published point is drawn (a draw of the whole grid would come back in order)
    draws = min(budget, space_size(method))
    grid = [flatten(p) for p in ParameterSampler(dict(method.search_space), draws, random_state=seed)]
    for point in grid:
        if len(out) == budget:
            break
        if point != first:
            out.append(point)
    return out
