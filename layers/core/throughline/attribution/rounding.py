"""Exact apportionment: split a whole number of units (kopecks, 1/10 000 conversions) by weights.

Largest remainder (Hamilton): each label gets the floor of its exact quota, and the units left over go one each to
the labels with the largest fractional parts (ties: label order). Quotas are exact rationals of the float weights,
so the parts always sum to the total and no label is off from its quota by a unit or more.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from math import floor


def apportion(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """``total`` units split over ``weights`` (non-negative; at least one positive unless ``total`` is 0)."""
    if total == 0:
        return dict.fromkeys(weights, 0)
    exact = {label: Fraction(weight) for label, weight in weights.items()}
    if any(weight < 0 for weight in exact.values()):
        raise ValueError("weights must not be negative")
    whole = sum(exact.values())
    if whole <= 0:
        raise ValueError(f"no positive weight to split {total} units over")
    quotas = {label: weight * total / whole for label, weight in exact.items()}
    parts = {label: floor(quota) for label, quota in quotas.items()}
    left = total - sum(parts.values())
    by_remainder = sorted(quotas, key=lambda label: (-(quotas[label] - parts[label]), label))
    for label in by_remainder[:left]:
        parts[label] += 1
    return parts
