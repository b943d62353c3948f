"""Attribution at scale: path building and every model on 1 000 000 people, 3 000 000 touches, 12 channels.

Synthetic but shaped like real traffic: a skewed channel mix (paid search and organic lead, display and
messengers trail), about 3 touches per person (geometric), gaps of hours to days, about 3 % of people converting
(more often after email, paid search or referral touches), a few repeat purchases, log-normal revenue. Prints the
time of path building and of each model, the process's peak memory, and ChannelAttribution's ``markov_model`` on
the same aggregated paths when it is installed (requirements-compare.txt). Asserts nothing (machines are noisy);
the targets are: our Markov faster than ChannelAttribution's, all eight models (with path building) under 20 s.

    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.attribution           # full run
    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.attribution --quick   # CI smoke run (20 000 people)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from throughline.attribution import ALL_MODELS, Conversion, TouchPoint, attribute, build_paths

CHANNELS = {
    "paid_search": 24,
    "organic_search": 20,
    "direct": 14,
    "social": 10,
    "paid_social": 8,
    "email": 7,
    "referral": 5,
    "display": 4,
    "messenger": 3,
    "video": 2,
    "affiliate": 2,
    "offline": 1,
}
LIFT = {"email": 0.025, "paid_search": 0.012, "referral": 0.015, "affiliate": 0.02, "offline": 0.03}
TARGET_SECONDS = 20.0
START = datetime(2026, 6, 1, tzinfo=UTC)


def journeys(people: int, seed: int = 2026) -> tuple[list[TouchPoint], list[Conversion]]:
    """Touches and won deals of ``people`` people (about 3 touches each, about 3 % converting, some twice)."""
    rng = np.random.default_rng(seed)
    names = list(CHANNELS)
    mix = np.array(list(CHANNELS.values()), dtype=float)
    counts = np.minimum(rng.geometric(1 / 3, people), 40)
    total = int(counts.sum())
    channel = rng.choice(len(names), size=total, p=mix / mix.sum())
    gaps = rng.exponential(1.5 * 86_400, size=total)
    owner = np.repeat(np.arange(people), counts)
    first = np.repeat(rng.uniform(0, 60 * 86_400, people), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    elapsed = np.cumsum(gaps)
    seconds = first + elapsed - np.repeat(elapsed[starts], counts)  # the first touch at `first`, then the gaps

    lift = np.array([LIFT.get(name, 0.0) for name in names])
    touched = np.zeros((people, len(names)), dtype=bool)
    touched[owner, channel] = True
    chance = 0.012 + touched.astype(float) @ lift
    converts = rng.random(people) < chance
    # A converting person converts after a random one of their touches (later touches stay unconverted).
    cut = starts + (rng.random(people) * counts).astype(np.int64)
    revenue = np.round(rng.lognormal(9.5, 0.8, people), 2)
    repeat = converts & (rng.random(people) < 0.08)

    keys = [f"contact-{n}" for n in range(people)]
    moments = [START + timedelta(seconds=float(s)) for s in seconds]
    touches = [
        TouchPoint(keys[person], moment, names[code], names[code], "")
        for person, moment, code in zip(owner.tolist(), moments, channel.tolist(), strict=True)
    ]
    conversions = []
    for person in np.flatnonzero(converts).tolist():
        won_at = moments[cut[person]] + timedelta(hours=2)
        conversions.append(Conversion(keys[person], won_at, Decimal(str(revenue[person]))))
        if repeat[person]:  # a repeat purchase a month later, after a new touch (an e-mail, say)
            again = won_at + timedelta(days=30)
            touches.append(TouchPoint(keys[person], again - timedelta(days=1), names[channel[cut[person]]], "", ""))
            conversions.append(Conversion(keys[person], again, Decimal(str(revenue[person]))))
    return touches, conversions


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 000 people: a CI smoke run")
    parser.add_argument("--people", type=int, help="people to simulate (default 1 000 000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    people = args.people or (20_000 if args.quick else 1_000_000)

    started = time.perf_counter()
    touches, conversions = journeys(people)
    print(
        f"data: {people:,} people, {len(touches):,} touches, {len(conversions):,} conversions, "
        f"{len(CHANNELS)} channels (generated in {time.perf_counter() - started:.1f} s, peak {peak_mb():.0f} MB)"
    )

    data_mb = peak_mb()
    timings: dict[str, tuple[float, float]] = {}  # wall, CPU: on a shared machine the CPU time is the steadier one
    started, cpu = time.perf_counter(), time.process_time()
    table = build_paths(touches, conversions)
    timings["build_paths"] = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"paths: {len(table):,} distinct, {int(table.nulls.sum()):,} non-converting journeys, "
        f"{table.total_conversions} conversions, revenue {table.total_revenue}"
    )
    results = {}
    for model in ALL_MODELS:
        started, cpu = time.perf_counter(), time.process_time()
        results.update(attribute(table, [model]))
        timings[model] = time.perf_counter() - started, time.process_time() - cpu
    print(f"  {'step':<18} {'wall':>8} {'CPU':>8}")
    for step, (wall, cpu) in timings.items():
        print(f"  {step:<18} {wall:7.2f}s {cpu:7.2f}s")
    wall, cpu = (sum(times) for times in zip(*timings.values(), strict=True))
    verdict = "under" if wall < TARGET_SECONDS else "OVER"
    print(f"  {'paths + all eight':<18} {wall:7.2f}s {cpu:7.2f}s ({verdict} the {TARGET_SECONDS:.0f} s target, wall)")
    print(f"peak memory of the process: {peak_mb():.0f} MB ({peak_mb() - data_mb:.0f} MB above the generated data)")

    figures = {"people": people, "touches": len(touches), "wall_seconds": wall, "cpu_seconds": cpu,
               "peak_mb": peak_mb(), "markov_cpu_seconds": timings["markov"][1]}  # fmt: skip
    figures["channel_attribution"] = _channel_attribution(
        table, timings["markov"], results["markov"], precise=not args.quick
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def _channel_attribution(table, ours_seconds: tuple[float, float], ours, *, precise: bool) -> dict | None:
    """ChannelAttribution's markov_model on the same paths; its figures (the first run's), or None without it."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import ChannelAttribution
        import pandas
    except Exception as error:
        print(f"ChannelAttribution: not compared ({error!r}; pip install -r requirements-compare.txt)")
        return None
    frame = pandas.DataFrame(
        {
            "path": [" > ".join(path) for path in table.paths],
            "total_conversions": np.rint(table.conversions).astype(np.int64),
            "total_conversion_value": table.revenue,
            "total_null": np.rint(table.nulls).astype(np.int64),
        }
    )
    mine = {row.channel: float(row.conversions) for row in ours}
    runs = [("defaults", {}), ("precise", {"nsim_start": 1e6, "conv_par": 0.01})]
    compared: dict | None = None
    for label, options in runs if precise else runs[:1]:
        started, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = ChannelAttribution.markov_model(
                frame,
                "path",
                "total_conversions",
                var_value="total_conversion_value",
                var_null="total_null",
                order=1,
                verbose=False,
                flg_pro=False,
                **options,
            ).set_index("channel_name")
        seconds = time.perf_counter() - started, time.process_time() - cpu
        differences = {
            channel: (mine[channel] / theirs.loc[channel, "total_conversions"] - 1) * 100
            for channel in mine
            if mine[channel]
        }
        print(
            f"ChannelAttribution markov_model ({label}, on the same {len(frame):,} paths): "
            f"wall {seconds[0]:.2f} s, CPU {seconds[1]:.2f} s vs ours wall {ours_seconds[0]:.2f} s, "
            f"CPU {ours_seconds[1]:.2f} s ({seconds[1] / max(ours_seconds[1], 1e-9):.1f}x in CPU); "
            f"largest per-channel difference in conversions {max(map(abs, differences.values())):.2f} %"
        )
        print("    ours vs theirs, conversions: " + ", ".join(f"{c} {d:+.2f} %" for c, d in differences.items()))
        if compared is None:
            largest = max(map(abs, differences.values()))
            compared = {"cpu_seconds": seconds[1], "wall_seconds": seconds[0], "largest_difference_pct": largest}
    return compared


if __name__ == "__main__":
    main()
