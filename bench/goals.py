"""Each benchmark prints its goals beside its figures and says whether they are met, in one format."""

from __future__ import annotations


def at_least(name: str, value: float, goal: float, unit: str = "") -> str:
    return _line(name, value, ">=", goal, unit, value >= goal)


def at_most(name: str, value: float, goal: float, unit: str = "") -> str:
    return _line(name, value, "<=", goal, unit, value <= goal)


def _line(name: str, value: float, relation: str, goal: float, unit: str, met: bool) -> str:
    return f"goal {name}: {value:,.2f}{unit} (goal {relation} {goal:g}{unit}) {'met' if met else 'NOT MET'}"
