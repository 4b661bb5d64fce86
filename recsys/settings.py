"""The one settings object: profile, addresses, paths and credentials.

Built once at the entry point (``Settings.load``) from an optional TOML file and the environment
(prefix ``RECSYS_``, nested keys joined by ``__``, e.g. ``RECSYS_POSTGRES__PORT``), then passed down.
Unknown keys, in the file or in the environment, are errors.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from recsys.errors import ConfigError

ENV_PREFIX = "RECSYS_"
ROOT_DIR = Path(__file__).resolve().parent.parent


def _validated_copy(model: BaseModel, update: Mapping[str, Any] | None, deep: bool) -> Any:
    """`model_copy` that validates: pydantic's own copies `update` in unchecked (a typo'd key or a wrong
    type would pass silently), so every change goes through the model's validation again."""
    if not update:
        return BaseModel.model_copy(model, deep=deep)
    unknown = sorted(set(update) - set(type(model).model_fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {type(model).__name__}; allowed: "
                          f"{', '.join(type(model).model_fields)}")
    if isinstance(model, BaseSettings):  # validating it anew would read the environment again
        fields, checked = type(model).model_fields, {}
        for key, value in update.items():
            try:
                checked[key] = _field_adapter(fields[key]).validate_python(value)
            except ValidationError as exc:
                raise ConfigError(f"invalid settings: {_describe(exc, prefix=(key,))}") from exc
        return BaseModel.model_copy(model, update=checked, deep=deep)
    try:
        return type(model).model_validate({**dict(model), **update})
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_describe(exc)}") from exc


def _field_adapter(field: FieldInfo) -> TypeAdapter[Any]:
    annotation: Any = field.annotation
    return TypeAdapter(Annotated[annotation, *field.metadata] if field.metadata else annotation)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        return _validated_copy(self, update, deep)


class PostgresSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 25432
    user: str = "recsys"
    password: SecretStr = SecretStr("recsys")
    database: str = "recsys"
    os_user: str = Field("postgres", description="OS account that runs the project's own server (infra/)")

    def conninfo(self) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password.get_secret_value()} dbname={self.database} connect_timeout=5"
        )


class RedisSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 26379
    db: int = 0


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:29092"
    controller_port: int = Field(29093, description="KRaft controller port of the project's own broker (infra/)")
    topic: str = "interaction-events"
    # The port of the project's own broker, parsed by infra/kafka.sh.
    port: int = 29092


class CassandraSettings(_Section):
    hosts: list[str] = ["127.0.0.1"]
    port: int = 29042
    storage_port: int = 27000
    jmx_port: int = 27199
    keyspace: str = "recsys"
    datacenter: str = "datacenter1"
    replication: dict[str, str] = {"class": "SimpleStrategy", "replication_factor": "1"}
    item_bucket: Literal["day", "month"] = Field(
        "month", description="time bucket of item_interactions partitions"
    )
    write_concurrency: int = 64
    heap: str = Field("1G", description="JVM heap of the project's own node (infra/)")


class FeatureStoreSettings(_Section):
    repo_path: Path = ROOT_DIR / "feature_repo"
    project: str = Field("recsys", description="Feast project; keys in the online store are scoped by it")
    services_yaml: Path = ROOT_DIR / "infra" / "feast" / "feature_store.yaml"
    spark_master: str = "local[2]"
    snapshot_cadence_days: int = 1


class ExperimentVariant(_Section):
    """One arm of an experiment: the buckets (of `hash(user_id) % 100`) it owns and what it changes."""

    name: str
    buckets: tuple[int, int] = Field(description="half-open range [start, end) of buckets 0..99")
    ranker_version: str | None = Field(None, description="ranker model version; None = the current one")
    diversity_boost: float = 0.0
    experiment: str = Field("default", description="the experiment this arm belongs to (`recsys experiment report "
                            "NAME`); its control is the users in no arm")
    shuffle: bool = Field(False, description="serve the arm's list in random order (a holdout against ranking)")


class ServingSettings(_Section):
    """The recommendation API: limits, auth, experiments, stage timeouts and cache TTLs."""

    host: str = "127.0.0.1"
    port: int = 58000
    workers: int = Field(1, ge=1, description="API worker processes (BentoML); one per core the API may use")
    fast_lane: bool = Field(True, description="answer valid GET /recommendations requests without FastAPI's routing "
                            "and dependency solving (same answers and errors; off: every request through the route)")
    api_keys: list[SecretStr] = Field(default_factory=lambda: [SecretStr("dev-key")],
                                      description="keys accepted in the X-API-Key header")
    admin_api_keys: list[SecretStr] = Field(default_factory=lambda: [SecretStr("dev-admin-key")],
                                            description="keys accepted in X-API-Key by the admin routes (POST "
                                            "/items); the ordinary keys get 403 there")
    playground_api_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("dev-key")],
        description="keys of `api_keys` that may also use the debugging aids of the web playground (GET "
        "/playground): force an experiment variant (`variant=` on GET /recommendations), read a user's history "
        "and the ranker's feature values; empty: no playground (404)")
    rate_limit_per_second: float = Field(200.0, description="per-key token bucket refill rate")
    rate_limit_burst: int = 400
    rate_limit_lease: int = Field(10, ge=1, description="services profile: tokens a worker takes from the shared "
                                  "Redis bucket per round trip (a key may overshoot by workers x lease)")
    max_n: int = 200
    max_body_bytes: int = 16_384
    allow_as_of: bool = Field(False, description="GET /recommendations accepts `as_of` (answer as at that moment: "
                              "replays, simulations of a past day); off in production, where it is a 403")
    experiments: list[ExperimentVariant] = Field(default_factory=list, description="empty: everyone in control")
    stage_timeout_ms: dict[str, float] = Field(
        default_factory=lambda: {"candidates": 100.0, "features": 50.0, "ranking": 100.0},
        description="per-stage time budget; a stage past it degrades the answer",
    )
    inline_stages: list[str] = Field(default_factory=list, description="pure-CPU stages (no I/O that could "
                                     "hang) that run on the request's thread once proven cheap, instead of a hop "
                                     "to their thread pool; a call past its budget still degrades the answer")
    admission_limit: int = Field(4, ge=1, description="GET /recommendations requests one API worker runs at once; "
                                 "more would only queue on its cores and saturate the stages' threads (4 each)")
    admission_queue: int = Field(32, ge=0, description="GET /recommendations requests that may wait for a slot per "
                                 "worker; past it a request gets 503 with Retry-After at once (admission control)")
    admission_queue_ms: float = Field(50.0, ge=0, description="longest wait for a slot (both kinds of request); "
                                      "past it 503 with Retry-After")
    events_admission_limit: int = Field(32, ge=1, description="POST /interactions and /feedback one worker runs at "
                                        "once (they wait on the bus); with admission_limit it stays under the 40 "
                                        "threads the API shares, so neither kind starves the other")
    events_admission_queue: int = Field(128, ge=0, description="POST /interactions and /feedback that may wait for "
                                        "a slot per worker; past it 503 with Retry-After")
    request_budget_ms: float = Field(200.0, gt=0, description="GET /recommendations' whole budget, from arrival at "
                                     "the worker; see cheap_after_share")
    cheap_after_share: float = Field(0.5, gt=0, le=1, description="a request that has waited more than this share of "
                                     "request_budget_ms (for admission, a thread, its turn between the lookup and "
                                     "precomputed read; time in those stages does not count) is answered from the "
                                     "cheapest rung that can (its precomputed list, else the popular items), never "
                                     "from the full path")
    precomputed_ttl_seconds: int = 24 * 3600
    precomputed_reads: bool = Field(True, description="answer from layer 1 (the precomputed lists) when it holds "
                                    "the user; False: every request takes the full path (benchmarks of it, the "
                                    "demo's simulated day, where both experiment arms must be ranked live)")
    embedding_cache_ttl_seconds: int = 3600
    feature_cache_ttl_seconds: int = 900
    nprobe: int = 32
    rank_depth: int = Field(100, ge=1, description="candidates the ranker scores (in fusion order); the rest "
                            "follow in fusion order. The ranker is trained on lists this deep")
    deny_list: list[str] = Field(default_factory=list, description="item ids never recommended")
    boosts: dict[str, float] = Field(default_factory=dict, description="item id -> multiplicative score boost")
    freshness_boost: float = Field(0.1, description="extra score share for items first seen in the last 30 days")
    publish_retries: int = Field(3, description="attempts to publish an event before answering 503")
    publish_timeout_ms: float = 2_000.0
    new_items_poll_seconds: float = Field(60.0, gt=0, description="how often serving reads the items created or "
                                          "updated in the catalog and swaps them into its in-memory tables")
    release_poll_seconds: float = Field(60.0, gt=0, description="how often serving reads models/RELEASE.json (or "
                                        "models/CURRENT without one) and loads a new stable or canary version")
    follow_release: bool = Field(True, description="the BentoML service (`make serve`, a Bento) serves and follows "
                                 "models/RELEASE.json when the data directory has one; off, or without the record, "
                                 "it serves the candidate artifact its model store pins")


class StreamingSettings(_Section):
    """The consumers of `interaction-events` (`recsys consume`) and what serving reads of their work."""

    group_prefix: str = Field("recsys-", description="each consumer's group is this prefix + its name")
    dlq_topic: str = Field("interaction-events.dlq", description="where undecodable or invalid events go")
    partitions: int = Field(12, ge=1, description="partitions of the event topic when the project creates it")
    replication_factor: int = Field(1, ge=1, description="of the topics the project creates (3 on the cluster)")
    batch_max_events: int = Field(2_000, ge=1, description="most events one consumer batch holds")
    batch_linger_ms: int = Field(20, ge=0, description="how long a batch waits for more events (added latency at "
                                 "low rates; a backlog fills batches at once)")
    backoff_max_seconds: float = Field(10.0, gt=0, description="longest wait between retries of a failed batch")
    metrics_port: int = Field(29300, description="the first consumer's Prometheus port; the next ones count up")
    lag_threshold: int = Field(10_000, ge=0, description="/readyz fails when a group lags by more events")
    session_gap_minutes: float = Field(30.0, gt=0, description="inactivity that closes a session")
    session_slots: int = Field(3, ge=0, description="top slots of an answer given to items near the live session")
    session_seeds: int = Field(5, ge=1, description="most recent session items whose neighbours are proposed")
    pushdown_neighbours: int = Field(20, ge=0, description="near neighbours of a not-interested item pushed down")
    fold_in_after: int = Field(3, ge=1, description="interactions after which a user with no stored vector gets "
                               "one folded in from their items' vectors, before the nightly run")


class MonitoringSettings(_Section):
    """The serving log, the reports of `recsys monitor` and `recsys experiment report`, and their thresholds."""

    serving_log_topic: str = Field("serving-log", description="where every answer of GET /recommendations is "
                                   "logged (Kafka in `services`; the in-process log in `local`)")
    feature_sample_rate: float = Field(0.05, ge=0.0, le=1.0, description="share of requests whose ranker input "
                                       "feature values are logged (drift and train/serve skew read them)")
    log_flush_seconds: float = Field(1.0, gt=0, description="local profile: how often the in-process serving log "
                                     "is written to the lake")
    attribution_minutes: float = Field(30.0, gt=0, description="an event without request_id is attributed to the "
                                       "user's latest impression of its item within this window")
    reports_dir: Path | None = Field(None, description="where reports go, in dated folders; default "
                                     "data_dir/reports")
    drift_window_hours: float = Field(24.0, gt=0, description="`recsys monitor drift`: the current window, the "
                                      "last this many hours of the serving log (up to its newest request)")
    drift_reference_days: float = Field(7.0, gt=0, description="prediction drift's reference: this many days of "
                                        "the serving log before the current window; event quality's: of the "
                                        "history before the incoming events")
    drift_min_rows: int = Field(200, ge=1, description="a side with fewer rows is not compared (the report says "
                                "why; prediction drift then splits the current window in halves)")
    drift_max_rows: int = Field(20_000, ge=100, description="rows sampled (seeded) per side of each comparison")
    drift_share_threshold: float = Field(0.3, ge=0, lt=1, description="feature drift fails when more than this "
                                         "share of the ranker's features drifted (Evidently's DriftedColumnsCount; "
                                         "the RecsysFeatureDrift alert's bound too); prediction drift fails when "
                                         "any of score, source, degradation did")
    drift_num_method: str | None = Field(None, description="Evidently stat test for numerical columns (`wasserstein`, "
                                         "`ks`, `psi`, ...); None: Evidently's choice (Wasserstein distance above "
                                         "1,000 rows, Kolmogorov-Smirnov below)")
    drift_cat_method: str | None = Field(None, description="the same for categorical columns (`jensenshannon`, "
                                         "`chisquare`, `psi`, ...)")
    drift_column_threshold: float | None = Field(None, description="one column's drift threshold for every column; "
                                                 "None: the method's default (0.1 for distances, 0.05 for p-values)")
    events_unknown_share_threshold: float = Field(0.01, ge=0, le=1, description="event quality fails when more "
                                                  "incoming events than this name a user or item the catalog lacks")
    events_missing_share_threshold: float = Field(0.01, ge=0, le=1, description="... or lack a required value "
                                                  "(user, item, action, time; a rating's value)")
    embedding_drift_method: Literal["model", "distance", "mmd", "ratio"] = Field(
        "mmd", description="Evidently's embedding drift method: `mmd` (maximum mean discrepancy, RBF kernel of "
        "median width), `model` (a linear classifier's ROC AUC telling the versions apart), `distance` (between "
        "mean vectors), `ratio` (share of drifted components)")
    embedding_drift_threshold: float | None = Field(None, description="above it the embeddings drifted; None: the "
                                                    "method's default (model 0.55, distance 0.2, mmd 0.015, "
                                                    "ratio 0.2)")
    embedding_sample_items: int = Field(1000, ge=50, description="items (present in both versions) compared; "
                                        "Evidently's t-SNE picture makes this the report's cost")
    quality_k: int = Field(10, ge=1, description="`recsys monitor quality`: the list depth its ranking metrics "
                           "(NDCG@k, MRR@k, hit rate@k, ...) are read at")
    quality_max_drop: float = Field(0.1, ge=0, le=1, description="quality fails when a served group's online NDCG@k, "
                                    "or the newest ranker's offline NDCG@k, is more than this share below the "
                                    "reference's (the most served group; the ranker in service)")
    quality_min_lists: int = Field(30, ge=1, description="online groups (variant, model version) with fewer lists "
                                   "that got a click are reported but not judged")
    quality_offline_users: int = Field(300, ge=1, description="users of the lake's last day sampled for the offline "
                                       "comparison of the newest ranker with the one in service")
    quality_history_items: int = Field(20, ge=1, description="each evaluated user's latest items before the window: "
                                       "Evidently's training data (popularity bias, novelty, serendipity)")
    quality_max_lists: int = Field(2000, ge=1, description="online lists per group measured (a seeded sample "
                                   "above this; Evidently's diversity compares every pair of listed items)")
    skew_tolerance: float = Field(1e-4, ge=0, description="`recsys monitor skew`: numbers match when they differ by "
                                  "at most this times max(1, |offline value|)")
    skew_threshold: float = Field(0.01, ge=0, le=1, description="a feature whose share of mismatching values (served "
                                  "against recomputed point in time) is above this is skewed; the command fails")
    skew_max_requests: int = Field(200, ge=1, description="the newest sampled requests the skew report recomputes "
                                   "(each is one point-in-time join per ranked candidate)")
    experiment_alpha: float = Field(0.05, gt=0, lt=1, description="`recsys experiment report`: a variant's "
                                    "difference from control is significant below this p-value (95% intervals)")
    experiment_srm_alpha: float = Field(0.001, gt=0, lt=1, description="sample-ratio mismatch: users per arm "
                                        "against the buckets' shares fail the chi-square test below this p-value")
    experiment_p99_latency_ms: float = Field(500.0, gt=0, description="guardrail: no arm's p99 answer latency "
                                             "(serving log) above this")
    experiment_degradation_margin: float = Field(0.05, ge=0, le=1, description="guardrail: no variant's share of "
                                                 "degraded answers (a rung below `full`, cold start aside) more "
                                                 "than this above control's")


class PipelineSettings(_Section):
    """`recsys pipeline run`: the daily pipeline's training and its gate (what a new version must pass)."""

    metric_tolerance: float = Field(0.05, ge=0, lt=1, description="the gate rejects a version whose offline metric "
                                    "(ANN recall, candidate recall and NDCG, final NDCG) is more than this share "
                                    "below the serving version's on the held-out day")
    popularity_margin: float = Field(0.0, ge=0, description="the new final lists' NDCG@10 must beat popularity's "
                                     "by more than this share")
    latency_budget_ms: float = Field(250.0, gt=0, description="p99 of the latency probe (full request path, "
                                     "in process, on the new version) must stay within this")
    latency_requests: int = Field(200, ge=10, description="requests the latency probe times")
    eval_users: int = Field(2000, ge=1, description="held-out-day users sampled (seeded) for the offline metrics")
    k: int = Field(100, ge=10, description="depth of the candidate and ANN recall")
    epochs: int = Field(12, ge=1, description="two-tower training epochs from scratch (the first run, `--full`, or "
                        "a serving version it cannot start from: no saved weights, or trained on the held-out day)")
    warm_epochs: int = Field(2, ge=1, description="two-tower epochs when warm-started from the serving version: on "
                             "the events it has not seen plus a replay sample of those it has")
    replay_share: float = Field(0.05, ge=0, le=1, description="warm start: the share of the events the serving "
                                "version was trained on that are trained on again (a seeded sample)")
    warm_learning_rate: float = Field(5e-4, gt=0, description="warm start: the learning rate of its epochs (from "
                                      "scratch: 2e-3)")
    ranker_candidate_epochs: int = Field(5, ge=1, description="epochs of the candidate model the ranker's window "
                                         "lists come from, from scratch (it warm-starts from the serving version's "
                                         "as the two-tower model does, with `warm_epochs`)")
    ranker_users: int | None = Field(10_000, ge=1, description="window users (a seeded sample) whose candidate lists "
                                     "train the ranker, and held-out users it is measured on; None: all")
    max_steps: int | None = Field(None, ge=1, description="cap on the batches of each two-tower training (a first "
                                  "run on a huge lake, bootstrapped short); None: the full epochs")
    ranker_epochs: int = Field(30, ge=1, description="most epochs of each ranker network (early stopping may end "
                               "it sooner)")
    ranker_members: int = Field(5, ge=1, description="ranker networks from different seeds, averaged")
    precompute_k: int = Field(100, ge=1, description="list length precomputed per active user after publication")
    precompute_active_days: int | None = Field(30, ge=1, description="the precompute step writes lists for users "
                                               "with events in this many days before the newest one (a list lives "
                                               "serving.precomputed_ttl_seconds; the others take the full path); "
                                               "None: every user in the lake")
    precompute_max_users: int | None = Field(20_000, ge=1, description="at most this many of them, the most recently "
                                             "active (about 13 ms each through the serving pipeline: 20,000 take "
                                             "some 4-5 minutes on 2 cores); None: all")
    drift: bool = Field(True, description="end with the drift report (`recsys monitor drift`)")
    canary_share: int = Field(0, ge=0, le=100, description="percent of users a passing version goes to first "
                              "(a canary beside the stable version); 0: it replaces the stable version at once")
    guardrail_window_minutes: float = Field(30.0, gt=0, description="`recsys release check` compares the canary "
                                            "with stable on the serving log of this many recent minutes")
    guardrail_min_requests: int = Field(200, ge=1, description="answers each version needs in the window before a "
                                        "check judges (promotes, or rolls back on a breach); fewer: it holds")
    guardrail_degraded_increase: float = Field(0.02, ge=0, le=1, description="the canary's degraded share (answers "
                                               "below `full`, cold start aside) may exceed stable's by this much")
    guardrail_p99_ratio: float = Field(1.5, ge=1, description="the canary's p99 latency may be this multiple of "
                                       "stable's")


class TrackingSettings(_Section):
    """Experiment tracking (MLflow): every training run's parameters, metrics, curves and small artifacts, and a
    registered version per published model pointing at what serving loads (the weights are not copied)."""

    enabled: bool = Field(True, description="record training runs; off: training runs as before, unrecorded")
    uri: str | None = Field(None, description="MLflow tracking URI: `http(s)://host:port` of a tracking server in "
                            "production; default sqlite:///data_dir/mlruns/mlflow.db (the local store)")
    artifact_root: str | None = Field(None, description="where a new experiment's artifacts go; default "
                                      "data_dir/mlruns/artifacts with the local store, the server's own with a server")
    experiment: str = Field("recsys", description="the MLflow experiment every run is recorded in")
    http_timeout_s: int = Field(10, ge=1, description="one request to a tracking server; an unreachable server "
                                  "costs the run about (retries + 1) times this, then training goes on unrecorded")
    http_retries: int = Field(1, ge=0, description="retries of a failed request to a tracking server")


class Settings(BaseSettings):
    """Everything a component needs to find its data and servers."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    profile: Literal["local", "services"] = "local"
    var_dir: Path = ROOT_DIR / "var"
    data_dir: Path | None = Field(None, description="datasets, lake and embedded stores; default var_dir/data")
    movielens_dir: Path | None = Field(None, description="ml-latest-small cache; default data_dir/ml-latest-small")
    shared_data_dir: Path = ROOT_DIR.parent / "shared" / "data"
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    features: FeatureStoreSettings = FeatureStoreSettings()
    serving: ServingSettings = ServingSettings()
    streaming: StreamingSettings = StreamingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    pipeline: PipelineSettings = PipelineSettings()
    tracking: TrackingSettings = TrackingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init kwargs); no .env or secrets dirs.
        return (env_settings, init_settings)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        return _validated_copy(self, update, deep)

    @property
    def data_path(self) -> Path:
        return self.data_dir or self.var_dir / "data"

    @property
    def lake_path(self) -> Path:
        return self.data_path / "lake"

    @property
    def reports_path(self) -> Path:
        """Where `recsys monitor` and `recsys experiment report` write, one dated folder per day."""
        return self.monitoring.reports_dir or self.data_path / "reports"

    @property
    def tracking_uri(self) -> str:
        """Where training runs are recorded: `tracking.uri`, or the sqlite store under data_dir/mlruns."""
        return self.tracking.uri or f"sqlite:///{self.data_path.resolve() / 'mlruns' / 'mlflow.db'}"

    @property
    def embedded_path(self) -> Path:
        """Where the `local` profile keeps its embedded stores."""
        return self.data_path / "embedded"

    @property
    def feature_data_path(self) -> Path:
        """Where the Spark job writes the tables the Feast file sources read."""
        return self.features.repo_path / "data" / "features"

    @property
    def movielens_path(self) -> Path:
        return self.movielens_dir or self.data_path / "ml-latest-small"

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build the settings from a TOML file, then the environment, then explicit overrides."""
        values: dict[str, Any] = {}
        if config_file is not None:
            try:
                values = tomllib.loads(Path(config_file).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read settings file {config_file}: {exc}") from exc
        _reject_unknown_env(os.environ)
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise ConfigError(f"invalid settings: {_describe(exc)}") from exc
        return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _reject_unknown_env(environ: Mapping[str, str]) -> None:
    """pydantic-settings ignores unknown prefixed variables; a typo must not pass silently."""
    for name in environ:
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        model: type[BaseModel] = Settings
        for depth, part in enumerate(path):
            field = model.model_fields.get(part)
            if field is None:
                raise ConfigError(f"unknown setting {name}: no key '{part}' in {model.__name__}; allowed: "
                                  f"{', '.join(model.model_fields)}")
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
            elif depth != len(path) - 1:
                raise ConfigError(f"unknown setting {name}: '{part}' has no sub-keys")


def _describe(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One clause per error; an unknown key names the keys its section allows."""
    clauses = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (*prefix, *err["loc"]))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            section = _section_at((*prefix, *err["loc"][:-1]))
            allowed = ", ".join(section.model_fields) if section is not None else "?"
            message = f"unknown key; allowed: {allowed}"
        clauses.append(f"{where}: {message}")
    return "; ".join(clauses)


def _section_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model
