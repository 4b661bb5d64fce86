"""An experiment's analysis: per arm users, impressions, CTR, conversion and MRR with 95% intervals, each
variant against control, the sample-ratio check and the guardrails, from the serving log and the events
attributed to it (`monitoring.attribution`).

An experiment NAME's arms are the `serving.experiments` variants whose `experiment` is NAME, plus
`control` (the users in no variant's buckets). The units:

- **CTR**: clicked impressions / impressions; an impression is one served item of one answer, and clicked
  means at least one click event attributed to it (several clicks on one impression count once).
- **conversion**: converted answers / answers; an answer converted when a purchase, or a rating of 4 or
  more, attributed to one of its items followed it within the session, taken as the attribution window
  (`monitoring.attribution_minutes` after the answer).
- **MRR**: the mean over answers of 1 / the rank of the answer's first clicked item (0 without a click).

Each is a ratio of per-user sums, tested with the delta method over users (`monitoring.stats`). A user's
arm is the arm of their first answer in the window; answers in another arm later (the buckets were
changed mid-experiment) are left out and counted as `crossover_users`. Answers the playground forced into an
arm (variant `forced:<name>`) and other experiments' arms are not read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from bento_services.pipeline.assignment import BUCKETS, CONTROL
from monitoring.attribution import Served
from monitoring.stats import Difference, Estimate, RatioCheck, difference, ratio, sample_ratio
from recsys.errors import ConfigError
from recsys.settings import ExperimentVariant, MonitoringSettings, Settings

METRICS = {"ctr": ("clicked", "impressions"), "conversion": ("converted", "requests"), "mrr": ("rr", "requests")}
#: Rungs that are not a failure: the full answer, and a user with nothing to personalise from yet.
NOT_DEGRADED = ("full", "cold_start")
ERRORS_NOTE = ("error share: not in the serving log (a request that failed has no answer to log); read "
               "recsys_requests_total{status=~\"5..\"} on /metrics, which has no variant label")


@dataclass(frozen=True)
class Arm:
    name: str
    share: float  # the buckets' share of all users, 0..1
    variant: ExperimentVariant | None  # None for control


@dataclass(frozen=True)
class Guardrail:
    requests: int
    p99_latency_ms: float
    degradation_share: float
    broken: list[str]


@dataclass
class ExperimentResult:
    name: str
    arms: dict[str, dict[str, Any]]  # per arm: users, requests, impressions, shares, ctr/conversion/mrr
    comparisons: dict[str, dict[str, dict[str, Any]]]  # variant -> metric -> Difference fields + significant
    ratio_check: RatioCheck
    guardrails: dict[str, Guardrail]
    crossover_users: int
    window: dict[str, str | None]
    settings: dict[str, float]
    daily: list[dict[str, Any]] = field(default_factory=list)  # day, arm, impressions, clicked, ctr
    cumulative: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # arm -> (time, CTR so far)
    latency_quantiles: dict[str, list[float]] = field(default_factory=dict)  # arm -> percentiles 0..100
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No sample-ratio mismatch and no broken guardrail (a significant difference is a finding, not a fault)."""
        return not self.ratio_check.mismatch and not any(g.broken for g in self.guardrails.values())

    def to_json(self) -> dict[str, Any]:
        return _finite(asdict(self) | {"ok": self.ok})


def arms_of(experiments: list[ExperimentVariant], name: str) -> list[Arm]:
    """Control and the experiment's variants with the share of buckets each owns (the first match wins)."""
    owner: dict[int, str] = {}
    for variant in experiments:
        start, end = variant.buckets
        for bucket in range(max(0, start), min(BUCKETS, end)):
            owner.setdefault(bucket, variant.name)
    mine = [v for v in experiments if v.experiment == name]
    if not mine:
        known = sorted({v.experiment for v in experiments})
        raise ConfigError(f"no experiment named {name!r} in serving.experiments; known: {', '.join(known) or 'none'}")
    taken = list(owner.values())
    arms = [Arm(CONTROL, (BUCKETS - len(taken)) / BUCKETS, None)]
    return arms + [Arm(v.name, taken.count(v.name) / BUCKETS, v) for v in mine]


def answers_and_impressions(served: Served, arms: list[Arm], window: timedelta
                            ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The arms' answers (with `arm`, `converted`, `rr`) and impressions (with `arm`, `clicked`), each user
    kept in the arm of their first answer; and how many users crossed over to another arm."""
    names = [a.name for a in arms]
    log = served.log[served.log["variant"].isin(names)].sort_values("served_at", kind="stable")
    first = log.groupby("user_id")["variant"].transform("first")
    crossover = int(log.loc[log["variant"] != first, "user_id"].nunique())
    log = log[log["variant"] == first].rename(columns={"variant": "arm"})
    shown = served.impressions[served.impressions["request_id"].isin(log["request_id"])]
    shown = shown.drop(columns="variant").merge(log[["request_id", "arm"]], on="request_id")

    events = served.events.dropna(subset=["request_id"])
    clicks = events.loc[events["action_type"] == "click", ["request_id", "item_id"]].drop_duplicates()
    shown = shown.merge(clicks.assign(clicked=1), on=["request_id", "item_id"], how="left")
    shown["clicked"] = shown["clicked"].fillna(0).astype("int64")

    gap = pd.to_datetime(events["event_time"], utc=True) - pd.to_datetime(events["served_at"], utc=True)
    converting = ((events["action_type"] == "purchase")
                  | ((events["action_type"] == "rate") & (events["value"].astype("float64") >= 4.0)))
    converted = set(events.loc[converting & (gap >= pd.Timedelta(0)) & (gap <= window), "request_id"])
    first_click = shown[shown["clicked"] == 1].groupby("request_id")["rank"].min()
    answers = log.assign(converted=log["request_id"].isin(converted).astype("int64"),
                         rr=(1.0 / log["request_id"].map(first_click)).fillna(0.0))
    return answers, shown, crossover


def per_user(answers: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """One row per user: arm, requests, impressions, clicked, converted, rr (sums over their answers)."""
    by_answer = answers.groupby("user_id").agg(arm=("arm", "first"), requests=("request_id", "size"),
                                               converted=("converted", "sum"), rr=("rr", "sum"))
    by_item = shown.groupby("user_id").agg(impressions=("item_id", "size"), clicked=("clicked", "sum"))
    users = by_answer.join(by_item, how="left").fillna({"impressions": 0, "clicked": 0})
    return users.reset_index()


def estimates(users: pd.DataFrame, confidence: float = 0.95) -> dict[str, Estimate]:
    return {metric: ratio(users[num].to_numpy(), users[den].to_numpy(), confidence)
            for metric, (num, den) in METRICS.items()}


def guardrail(answers: pd.DataFrame, control_share: float | None, monitoring: MonitoringSettings) -> Guardrail:
    """p99 latency against the ceiling; degraded share against control's plus the margin (variants only)."""
    latency = answers["latency_ms"].astype("float64").dropna().to_numpy()
    p99 = float(np.percentile(latency, 99)) if len(latency) else math.nan
    degraded = float((~answers["degradation"].isin(NOT_DEGRADED)).mean()) if len(answers) else math.nan
    broken = []
    if p99 > monitoring.experiment_p99_latency_ms:
        broken.append(f"p99 latency {p99:.0f} ms > {monitoring.experiment_p99_latency_ms:.0f} ms")
    if control_share is not None and degraded > control_share + monitoring.experiment_degradation_margin:
        broken.append(f"degraded share {degraded:.1%} > control's {control_share:.1%} + "
                      f"{monitoring.experiment_degradation_margin:.1%}")
    return Guardrail(len(answers), p99, degraded, broken)


def analyze(served: Served, settings: Settings, name: str) -> ExperimentResult:
    """The experiment `name` over what `served` holds (see the module doc for the units and the test)."""
    monitoring = settings.monitoring
    arms = arms_of(settings.serving.experiments, name)
    window = timedelta(minutes=monitoring.attribution_minutes)
    answers, shown, crossover = answers_and_impressions(served, arms, window)
    users = per_user(answers, shown)
    confidence = 1 - monitoring.experiment_alpha
    by_arm = {a.name: users[users["arm"] == a.name] for a in arms}
    est = {arm: estimates(frame, confidence) for arm, frame in by_arm.items()}
    total_users = max(len(users), 1)
    arm_rows = {a.name: {"users": len(by_arm[a.name]), "requests": int(by_arm[a.name]["requests"].sum()),
                         "impressions": int(by_arm[a.name]["impressions"].sum()), "expected_share": a.share,
                         "observed_share": len(by_arm[a.name]) / total_users,
                         "shuffle": bool(a.variant.shuffle) if a.variant else False,
                         **{m: asdict(e) for m, e in est[a.name].items()}} for a in arms}
    comparisons = {a.name: {m: _compared(difference(est[a.name][m], est[CONTROL][m], confidence),
                                         monitoring.experiment_alpha) for m in METRICS}
                   for a in arms if a.variant is not None}
    shares = {a.name: a.share for a in arms if a.share > 0}
    check = sample_ratio({a: len(f) for a, f in by_arm.items()}, shares, monitoring.experiment_srm_alpha)
    by_answers = {a.name: answers[answers["arm"] == a.name] for a in arms}
    control = guardrail(by_answers[CONTROL], None, monitoring)
    guards = {a.name: control if a.variant is None else
              guardrail(by_answers[a.name], control.degradation_share, monitoring) for a in arms}
    served_at = served.log["served_at"]
    span = {"since": str(served_at.min()) if len(served_at) else None,
            "until": str(served_at.max()) if len(served_at) else None}
    thresholds = {"alpha": monitoring.experiment_alpha, "srm_alpha": monitoring.experiment_srm_alpha,
                  "p99_latency_ms": monitoring.experiment_p99_latency_ms,
                  "degradation_margin": monitoring.experiment_degradation_margin,
                  "session_minutes": monitoring.attribution_minutes}
    daily, cumulative = timeline(shown)
    quantiles = {arm: np.percentile(frame["latency_ms"].astype("float64").dropna(), np.arange(101)).tolist()
                 for arm, frame in by_answers.items() if frame["latency_ms"].notna().any()}
    return ExperimentResult(name, arm_rows, comparisons, check, guards, crossover, span, thresholds, daily,
                            cumulative, quantiles, [ERRORS_NOTE])


def timeline(shown: pd.DataFrame, points: int = 200) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, float]]]]:
    """CTR per arm and serving day, and the cumulative CTR per arm over time (at most `points` per arm)."""
    at = pd.to_datetime(shown["served_at"], utc=True)
    days = shown.assign(day=at.dt.strftime("%Y-%m-%d")).groupby(["day", "arm"])["clicked"].agg(["size", "sum"])
    daily = [{"day": day, "arm": arm, "impressions": int(n), "clicked": int(c), "ctr": c / n}
             for (day, arm), (n, c) in days.iterrows()]
    cumulative: dict[str, list[tuple[str, float]]] = {}
    for arm, frame in shown.assign(at=at).sort_values("at", kind="stable").groupby("arm"):
        ctr = frame["clicked"].cumsum().to_numpy() / np.arange(1, len(frame) + 1)
        keep = np.unique(np.linspace(0, len(frame) - 1, min(points, len(frame))).astype(int))
        cumulative[str(arm)] = [(frame["at"].iloc[k].isoformat(timespec="milliseconds"), float(ctr[k]))
                                for k in keep]
    return daily, cumulative


def headline(result: ExperimentResult) -> str:
    """One line: each variant's CTR against control, the ratio check and the guardrails."""
    parts = [f"experiment {result.name}:"]
    if not any(row["users"] for row in result.arms.values()):
        return f"experiment {result.name}: no answers of its arms in the window ({', '.join(result.arms)})"
    control = result.arms[CONTROL]["ctr"]["value"]
    for variant, metrics in result.comparisons.items():
        ctr = metrics["ctr"]
        flag = "significant" if ctr["significant"] else "not significant"
        parts.append(f"{variant} CTR {result.arms[variant]['ctr']['value']:.4f} vs control {control:.4f} "
                     f"({ctr['relative']:+.1%}, p={ctr['p_value']:.3g}, {flag});")
    check = result.ratio_check
    parts.append(f"ratio check {'MISMATCH' if check.mismatch else 'ok'} (p={check.p_value:.3g});")
    broken = [f"{arm}: {', '.join(g.broken)}" for arm, g in result.guardrails.items() if g.broken]
    parts.append("guardrails " + ("BROKEN (" + "; ".join(broken) + ")" if broken else "ok"))
    return " ".join(parts)


def _compared(found: Difference, alpha: float) -> dict[str, Any]:
    return asdict(found) | {"significant": bool(found.p_value < alpha)}


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
