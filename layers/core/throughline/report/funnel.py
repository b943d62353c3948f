"""The funnel per pipeline: records per stage, how many reached each stage, stage-to-stage conversion, time in
stage, loss reasons.

With stage history (``crm.stagehistory.list``), a deal reached the furthest stage of the path it ever entered (and
every stage before it), a lost deal counts up to the stage where it fell out, and the time between entering a stage
and the next move is its time in that stage. Without history (leads; deals whose history is missing), "reached" is
derived from where records are now: a record in a process stage passed every earlier one, a won record all of
them, a lost record only the first (where it fell out is unknown); time in stage stays empty.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from throughline.report import metrics
from throughline.report.models import Pipeline, StageCount

_SEMANTICS = {"S": "success", "F": "failure"}


class StageBook:
    """Stage dictionaries from ``crm.status.list``: ``STATUS`` (leads), ``DEAL_STAGE`` and ``DEAL_STAGE_<n>``."""

    def __init__(self, statuses: Iterable[Mapping[str, Any]] = (), pipelines: Mapping[int, str] | None = None):
        self.stages: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        ordered = sorted(statuses, key=lambda row: (str(row.get("ENTITY_ID")), int(row.get("SORT") or 0)))
        for row in ordered:
            entity_id = str(row.get("ENTITY_ID") or "")
            if entity_id == "STATUS" or entity_id.startswith("DEAL_STAGE"):
                semantics = _SEMANTICS.get(str(row.get("SEMANTICS") or ""), "process")
                name = str(row.get("NAME") or row["STATUS_ID"])
                self.stages[entity_id].append((str(row["STATUS_ID"]), name, semantics))
        self.pipelines = dict(pipelines or {})

    def deal_stages(self, category_id: int) -> list[tuple[str, str, str]]:
        return self.stages.get("DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}", [])

    def pipeline_name(self, category_id: int) -> str:
        return self.pipelines.get(category_id) or ("Общая воронка" if category_id == 0 else f"Воронка {category_id}")


def build_funnels(
    lead_statuses: Mapping[str, int],
    deal_stages: Mapping[int, Mapping[str, int]],
    stages: StageBook,
    deal_paths: Mapping[int, list[tuple[str, list[tuple[str, datetime]]]]] | None = None,
) -> list[Pipeline]:
    """Funnels of the period's leads (by ``STATUS_ID``) and deals (by pipeline and ``STAGE_ID``). ``deal_paths``:
    per pipeline, each deal's current stage and its stage history (stage, time entered), oldest first."""
    funnels = []
    if lead_statuses:
        funnels.append(_pipeline("lead", None, "Лиды", Counter(lead_statuses), stages.stages.get("STATUS", [])))
    for category_id in sorted(deal_stages):
        funnels.append(
            _pipeline(
                "deal",
                category_id,
                stages.pipeline_name(category_id),
                Counter(deal_stages[category_id]),
                stages.deal_stages(category_id),
                (deal_paths or {}).get(category_id),
            )
        )
    return funnels


def _pipeline(
    entity: str,
    category_id: int | None,
    name: str,
    counts: Counter[str],
    dictionary: list[tuple[str, str, str]],
    paths: list[tuple[str, list[tuple[str, datetime]]]] | None = None,
) -> Pipeline:
    known = {stage_id for stage_id, _, _ in dictionary}
    # Stages missing from the dictionary (deleted since) still count: appended as process stages.
    seen = set(counts) | {stage for _, entries in paths or () for stage, _ in entries}
    dictionary = dictionary + [(stage_id, stage_id, "process") for stage_id in sorted(seen) if stage_id not in known]
    path = [stage for stage in dictionary if stage[2] != "failure"]
    path.sort(key=lambda stage: stage[2] == "success")  # success after every process stage
    failures = [stage for stage in dictionary if stage[2] == "failure"]
    position = {stage_id: index for index, (stage_id, _, _) in enumerate(path)}
    furthest: Counter[int] = Counter()  # path index → records whose furthest stage it is
    days_in: dict[str, list[float]] = defaultdict(list)
    with_history = 0
    for current, entries in paths or ():
        if not entries:
            continue  # judged by its current stage below
        indexes = [position[stage] for stage, _ in entries if stage in position]
        if current in position:
            indexes.append(position[current])
        if not indexes:
            continue
        with_history += 1
        furthest[max(indexes)] += 1
        for (stage, entered), (_, left) in pairwise(entries):
            days_in[stage].append((left - entered).total_seconds() / 86400)
    # Records without history: judged by their current stage (a lost one counts at the first stage only).
    remaining = counts.copy()
    for current, entries in paths or ():
        if entries:
            remaining[current] -= 1
    for stage_id, index in position.items():
        furthest[index] += max(remaining[stage_id], 0)
    lost_without_history = sum(max(remaining[stage_id], 0) for stage_id, _, _ in failures)
    if path:
        furthest[0] += lost_without_history
    reached: dict[str, int] = {}
    running = 0
    for index in range(len(path) - 1, -1, -1):
        running += furthest[index]
        reached[path[index][0]] = running
    lost = sum(counts[stage_id] for stage_id, _, _ in failures)
    rows, previous = [], None
    for stage_id, stage_name, semantics in path + failures:
        count = counts[stage_id]
        here = reached.get(stage_id, count)
        on_path = semantics != "failure"
        durations = days_in.get(stage_id)
        rows.append(
            StageCount(
                stage_id=stage_id,
                name=stage_name,
                semantics=semantics,
                count=count,
                reached=here,
                conversion_from_previous=metrics.percent(here, previous) if on_path and previous else None,
                mean_days_in_stage=Decimal(str(round(sum(durations) / len(durations), 1))) if durations else None,
            )
        )
        if on_path:
            previous = here
    won = sum(counts[stage_id] for stage_id, _, semantics in path if semantics == "success")
    reasons: Counter[str] = Counter()  # by name: two failure stages may share one (the counts add up, not overwrite)
    for stage_id, stage_name, _ in failures:
        if counts[stage_id]:
            reasons[stage_name] += counts[stage_id]
    return Pipeline(
        entity=entity,
        category_id=category_id,
        name=name,
        total=sum(counts.values()),
        won=won,
        lost=lost,
        stages=rows,
        loss_reasons=dict(reasons),
        source="stage_history" if with_history else "current_stage",
    )
