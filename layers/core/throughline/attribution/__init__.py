"""Attribution over whole journeys: eight models, exact Markov and Shapley, cohorts and LTV.

Off the HTTP path (uses numpy). The API the ROI report calls::

    from throughline.attribution import ALL_MODELS, Conversion, TouchPoint, attribute, build_paths

    table = build_paths(touches, conversions, by="channel")   # or "source", "campaign", or a function of a touch
    results = attribute(table, ALL_MODELS, half_life_days=7, markov_order=1)
    # {"first_click": [ChannelCredit(channel, conversions: Decimal, revenue: Decimal), ...], ..., "shapley": [...]}

- ``touches``: objects with ``person_key, at (aware datetime), channel, source, campaign`` (e.g. :class:`TouchPoint`);
  direct visits have ``channel == "direct"`` and are kept (last non-direct needs them).
- ``conversions``: objects with ``person_key, at, revenue (Decimal, report currency)`` (e.g. :class:`Conversion`):
  won deals, or leads / created deals if the report counts those.
- Every model's rows cover every label of the table, sorted by label, and sum EXACTLY to
  ``table.total_conversions`` (to 0.0001) and ``table.total_revenue`` (to the kopeck).
- :func:`acquisition_cohorts` (``throughline.attribution.cohorts``) gives monthly cohorts by source with LTV.

Path rules: :mod:`.paths`; formulas: :mod:`.models`, :mod:`.markov`, :mod:`.shapley`; docs/attribution.md.
"""

from throughline.attribution.cohorts import Cohort, CohortDeal, acquisition_cohorts
from throughline.attribution.models import ALL_MODELS, DEFAULT_HALF_LIFE_DAYS, ChannelCredit, attribute
from throughline.attribution.paths import (
    DIRECT,
    UNTRACKED,
    Conversion,
    PathTable,
    TouchPoint,
    build_paths,
    packed_paths,
    path_table,
)

__all__ = [
    "ALL_MODELS",
    "DEFAULT_HALF_LIFE_DAYS",
    "DIRECT",
    "UNTRACKED",
    "ChannelCredit",
    "Cohort",
    "CohortDeal",
    "Conversion",
    "PathTable",
    "TouchPoint",
    "acquisition_cohorts",
    "attribute",
    "build_paths",
    "packed_paths",
    "path_table",
]
