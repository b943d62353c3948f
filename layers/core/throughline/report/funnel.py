"""The funnel per pipeline: records per stage, how many reached each stage, stage-to-stage conversion, loss reasons.

Without stage history, "reached" is derived from where records are now: a record in a process stage passed every
earlier process stage; a won record passed them all; a lost record is counted at the first stage only (where it
fell out is not known from its current stage) and under its failure stage as the loss reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
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
    lead_statuses: Mapping[str, int], deal_stages: Mapping[int, Mapping[str, int]], stages: StageBook
) -> list[Pipeline]:
    """Funnels of the period's leads (by ``STATUS_ID``) and deals (by pipeline and ``STAGE_ID``)."""
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
            )
        )
    return funnels


def _pipeline(
    entity: str, category_id: int | None, name: str, counts: Counter[str], dictionary: list[tuple[str, str, str]]
) -> Pipeline:
    known = {stage_id for stage_id, _, _ in dictionary}
    # Stages missing from the dictionary (deleted since) still count: appended as process stages.
    dictionary = dictionary + [(stage_id, stage_id, "process") for stage_id in sorted(counts) if stage_id not in known]
    path = [stage for stage in dictionary if stage[2] != "failure"]
    path.sort(key=lambda stage: stage[2] == "success")  # success after every process stage
    failures = [stage for stage in dictionary if stage[2] == "failure"]
    lost = sum(counts[stage_id] for stage_id, _, _ in failures)
    reached_after = 0
    reached: dict[str, int] = {}
    for stage_id, _, _ in reversed(path):
        reached_after += counts[stage_id]
        reached[stage_id] = reached_after
    if path:
        reached[path[0][0]] += lost
    rows, previous = [], None
    for stage_id, stage_name, semantics in path + failures:
        count = counts[stage_id]
        here = reached.get(stage_id, count)
        on_path = semantics != "failure"
        rows.append(
            StageCount(
                stage_id=stage_id,
                name=stage_name,
                semantics=semantics,
                count=count,
                reached=here,
                conversion_from_previous=metrics.percent(here, previous) if on_path and previous else None,
                mean_days_in_stage=None,
            )
        )
        if semantics != "failure":
            previous = here
    won = sum(counts[stage_id] for stage_id, _, semantics in path if semantics == "success")
    return Pipeline(
        entity=entity,
        category_id=category_id,
        name=name,
        total=sum(counts.values()),
        won=won,
        lost=lost,
        stages=rows,
        loss_reasons={stage_name: counts[stage_id] for stage_id, stage_name, _ in failures if counts[stage_id]},
        source="current_stage",
    )
