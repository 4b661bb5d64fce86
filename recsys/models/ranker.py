"""The Wide & Deep ranker: one feature encoder for training and serving, the network, and the scorer.

The encoder turns the `ranker_v1` columns (`view__feature`, the layout of both
`FastOnlineFeatures.get(...)[0]` and `build_training_set(...).frame`) plus the candidate and
embedding scores into tensors. Its column list comes from the feature service at training time and
is saved in the checkpoint with the standardisation statistics and vocabularies, so serving rebuilds
exactly the training transformation without a second hand-kept list of features.

* numeric features: missing -> typed default, signed log1p, standardised with training mean / std;
* categorical features: a vocabulary from training (index 0 = unseen), embedded in the deep part;
* list features from the scores: the candidate and embedding scores, their rank within the list and
  their gap to the list's best, so the model can learn "how much better than the alternatives";
* wide part: hashed crosses (category x affinity bucket, device x category, engagement x category, ...).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import bentoml
import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys.features.service import FeatureSpec
from recsys.private.bentoml import model_store

SCORE_FEATURES = ("candidate_score", "embedding_score", "candidate_rank", "embedding_rank",
                  "candidate_gap", "embedding_gap")
CATEGORY, AFFINITY, DEVICE = "item_features__category", "user_item_features__user_category_affinity", \
    "request_features__device_type"
ENGAGEMENT, HOUR, WEEKEND = "user_features__engagement_level", "request_features__hour_of_day", \
    "request_features__is_weekend"
ITEM_30D = "item_features__interactions_30d"
RELATIVE_VIEWS = ("item_features__", "user_item_features__")
HASH_MEMO = 100_000  # cross keys whose bucket an encoder remembers (then it starts over)


@dataclass(frozen=True)
class Column:
    """One input column of the feature service: its name, kind (numeric / categorical) and default."""

    ref: str
    kind: str
    default: Any


def columns_of(specs: Sequence[FeatureSpec]) -> list[Column]:
    """The encoder's columns from a feature service layout (`service_layout(store, name).specs`)."""
    out = []
    for spec in specs:
        name = spec.value_type.name
        if name in ("STRING", "BOOL"):
            out.append(Column(spec.ref, "categorical", str(spec.default)))
        elif name in ("INT32", "INT64", "FLOAT", "DOUBLE"):
            out.append(Column(spec.ref, "numeric", float(spec.default)))
    return out


@dataclass
class Encoded:
    dense: torch.Tensor  # float32 (rows, dense)
    categorical: torch.Tensor  # int64 (rows, categorical columns)
    wide: torch.Tensor  # int64 (rows, crosses): hashed bucket ids


@dataclass
class FeatureEncoder:
    """Feature dict (or frame) + scores -> tensors; `fit` learns statistics, the rest is pure."""

    columns: list[Column]
    wide_buckets: int = 4096
    min_count: int = 5
    list_relative: bool = True
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    @property
    def numeric(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "categorical"]

    @property
    def relative(self) -> list[Column]:
        """Item-side numeric columns that also enter as their deviation from the list's mean."""
        return [c for c in self.numeric if c.ref.startswith(RELATIVE_VIEWS)] if self.list_relative else []

    @property
    def dense_size(self) -> int:
        return len(self.numeric) + len(SCORE_FEATURES) + len(self.relative)

    def fit(self, features: pd.DataFrame, candidate_scores: np.ndarray, embedding_scores: np.ndarray,
            groups: np.ndarray) -> FeatureEncoder:
        raw = self._raw_dense(_as_dict(features), candidate_scores, embedding_scores, groups)
        self.mean = raw.mean(axis=0).tolist()
        self.std = np.maximum(raw.std(axis=0), 1e-6).tolist()
        for column in self.categorical:
            counts = pd.Series(self._strings(_as_dict(features), column, len(features))).value_counts()
            self.vocab[column.ref] = sorted(str(v) for v in counts[counts >= self.min_count].index)
        return self

    def _index(self, column: Column) -> dict[str, int]:
        """The column's vocabulary as value -> embedding row (0: unseen), built once per vocabulary."""
        cache: dict[str, tuple[list[str], dict[str, int]]] = self.__dict__.setdefault("_indexes", {})
        words = self.vocab.get(column.ref, [])
        cached = cache.get(column.ref)
        if cached is None or cached[0] is not words:  # `fit` replaces a vocabulary list, never edits it
            cached = cache[column.ref] = (words, {v: i + 1 for i, v in enumerate(words)})
        return cached[1]

    def _bucket_of(self, key: str) -> int:
        """crc32(key) % wide_buckets, remembered: a serving process sees the same few thousand keys all day."""
        memo: dict[str, int] = self.__dict__.setdefault("_buckets", {})
        bucket = memo.get(key)
        if bucket is None:
            if len(memo) >= HASH_MEMO:
                memo.clear()
            bucket = memo[key] = zlib.crc32(key.encode()) % self.wide_buckets
        return bucket

    def encode(self, features: dict[str, Sequence[Any]] | pd.DataFrame, candidate_scores: np.ndarray,
               embedding_scores: np.ndarray, groups: np.ndarray | None = None) -> Encoded:
        """Rows of one candidate list (serving, `groups=None`) or of many (training: a list id per row)."""
        values = _as_dict(features)
        n = len(candidate_scores)
        groups = np.zeros(n, dtype=np.int64) if groups is None else groups
        raw = self._raw_dense(values, candidate_scores, embedding_scores, groups)
        dense = (raw - np.asarray(self.mean)) / np.asarray(self.std)
        categorical = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, column in enumerate(self.categorical):
            index = self._index(column)
            categorical[:, j] = [index.get(v, 0) for v in self._strings(values, column, n)]
        return Encoded(torch.from_numpy(dense.astype(np.float32)), torch.from_numpy(categorical),
                       torch.from_numpy(self._crosses(values, n)))

    def _raw_dense(self, values: dict[str, Sequence[Any]], candidate_scores: np.ndarray,
                   embedding_scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
        numeric = {c.ref: _signed_log(self._floats(values, c, len(candidate_scores))) for c in self.numeric}
        lists = _list_features(np.asarray(candidate_scores, dtype=np.float64),
                               np.asarray(embedding_scores, dtype=np.float64), np.asarray(groups))
        relative = [_minus_list_mean(numeric[c.ref], np.asarray(groups)) for c in self.relative]
        columns = [*numeric.values(), *lists, *relative]
        return np.column_stack(columns) if columns else np.zeros((len(groups), 0))

    @staticmethod
    def _floats(values: dict[str, Sequence[Any]], column: Column, n: int) -> np.ndarray:
        raw = values.get(column.ref)
        if raw is None:
            return np.full(n, column.default, dtype=np.float64)
        try:  # numbers and None (-> NaN): the serving case, without pandas
            array = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            array = pd.to_numeric(pd.Series(list(raw), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        return np.where(np.isfinite(array), array, column.default)

    @staticmethod
    def _strings(values: dict[str, Sequence[Any]], column: Column, n: int) -> list[str]:
        raw = values.get(column.ref)
        if raw is None:
            return [str(column.default)] * n
        return [column.default if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in raw]

    def _crosses(self, values: dict[str, Sequence[Any]], n: int) -> np.ndarray:
        """Hashed wide crosses; a column the layout lacks reads as its default (or "unknown").

        Each cross's key is `name=<a>|<b>` over two columns with few distinct values (a category, a bucket,
        a user or request value): the keys are built and hashed once per distinct pair, not per row.
        """
        def text(ref: str) -> tuple[np.ndarray, list[str]]:
            column = next((c for c in self.columns if c.ref == ref), Column(ref, "categorical", "unknown"))
            if column.kind == "numeric":
                return _distinct([str(v) for v in self._floats(values, column, n).tolist()])
            return _distinct(self._strings(values, column, n))

        def bucket(ref: str, edges: Sequence[float]) -> tuple[np.ndarray, list[str]]:
            column = next((c for c in self.columns if c.ref == ref), Column(ref, "numeric", 0.0))
            codes = np.digitize(self._floats(values, column, n), edges)
            return codes.astype(np.int64), [str(b) for b in range(len(edges) + 1)]

        category = text(CATEGORY)
        engagement = text(ENGAGEMENT)
        parts = {
            "cat": (category, None),
            "cat_x_aff": (category, bucket(AFFINITY, (1e-9, 0.05, 0.1, 0.2, 0.35))),
            "dev_x_cat": (text(DEVICE), category),
            "eng_x_cat": (engagement, category),
            "hour_x_cat": (bucket(HOUR, (6, 12, 18)), category),
            "wkd_x_cat": (text(WEEKEND), category),
            "pop_x_eng": (bucket(ITEM_30D, (1, 3, 10, 30)), engagement),
        }
        out = np.zeros((n, len(parts)), dtype=np.int64)
        for j, (name, (first, second)) in enumerate(parts.items()):
            out[:, j] = self._hashed(name, first, second)
        return out

    def _hashed(self, name: str, first: tuple[np.ndarray, list[str]],
                second: tuple[np.ndarray, list[str]] | None) -> np.ndarray:
        """crc32(`name=a|b`) % buckets per row, computed once per distinct (a, b)."""
        codes, labels = first
        if second is None:
            return np.array([self._bucket_of(f"{name}={a}") for a in labels], dtype=np.int64)[codes] \
                if len(codes) else np.zeros(0, dtype=np.int64)
        other_codes, other_labels = second
        pairs = codes * len(other_labels) + other_codes
        distinct, inverse = np.unique(pairs, return_inverse=True)
        width = len(other_labels)
        hashed = np.array([self._bucket_of(f"{name}={labels[p // width]}|{other_labels[p % width]}")
                           for p in distinct.tolist()], dtype=np.int64)
        return hashed[inverse.reshape(-1)] if len(pairs) else np.zeros(0, dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "columns"},
                "columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureEncoder:
        return cls(**{**state, "columns": [Column(**c) for c in state["columns"]]})


def _distinct(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """(a code per value, the distinct values in order of appearance)."""
    seen: dict[str, int] = {}
    codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(seen)


def _as_dict(features: dict[str, Sequence[Any]] | pd.DataFrame) -> dict[str, Sequence[Any]]:
    if isinstance(features, pd.DataFrame):
        return {str(c): features[c].tolist() for c in features.columns}
    return features


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _one_list(groups: np.ndarray) -> bool:
    """All rows belong to one list (serving): numpy alone, no group-by."""
    return len(groups) == 0 or bool((groups == groups[0]).all())


def _minus_list_mean(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    if _one_list(groups):
        return x - x.mean() if len(x) else x
    return x - pd.Series(x).groupby(groups, sort=False).transform("mean").to_numpy()


def _descending_rank(x: np.ndarray) -> np.ndarray:
    """0 = largest; ties in order of appearance (pandas' rank(ascending=False, method="first") - 1)."""
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[np.argsort(-x, kind="stable")] = np.arange(len(x), dtype=np.float64)
    return ranks


def _list_features(candidate: np.ndarray, embedding: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    """Scores, rank within the list (0 = best) and gap to the list's best score.

    Neither depends on the list's length, so a longer list at serving time than in training leaves
    the features of its head unchanged (ranks past the training depth extrapolate).
    """
    if _one_list(groups):
        ranks = [_descending_rank(candidate), _descending_rank(embedding)]
        gaps = [x - x.max() if len(x) else x for x in (candidate, embedding)]
        return [np.asarray(x, dtype=np.float64) for x in (candidate, embedding, *ranks, *gaps)]
    frame = pd.DataFrame({"g": groups, "c": candidate, "e": embedding})
    by = frame.groupby("g", sort=False)
    out = [candidate, embedding]
    for col in ("c", "e"):
        out.append(by[col].rank(ascending=False, method="first").to_numpy() - 1)
    for col in ("c", "e"):
        out.append(frame[col].to_numpy() - by[col].transform("max").to_numpy())
    return [np.asarray(x, dtype=np.float64) for x in out]


@dataclass(frozen=True)
class WideDeepConfig:
    dense: int
    categorical_sizes: tuple[int, ...]  # vocabulary size + 1 per categorical column
    wide_buckets: int = 4096
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1

    @property
    def deep_inputs(self) -> int:
        return self.dense + self.embedding_dim * len(self.categorical_sizes)


class WideDeep(nn.Module):
    """logit = wide (hashed crosses + linear dense) + deep (MLP over dense and embeddings)."""

    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        self.config = config
        self.cross = nn.EmbeddingBag(config.wide_buckets, 1, mode="sum")
        self.linear = nn.Linear(config.dense, 1)
        self.embeddings = nn.ModuleList(nn.Embedding(size, config.embedding_dim) for size in config.categorical_sizes)
        layers: list[nn.Module] = []
        width = config.deep_inputs
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.deep = nn.Sequential(*layers)
        nn.init.zeros_(self.cross.weight)

    def forward(self, batch: Encoded) -> torch.Tensor:
        embedded = [table(batch.categorical[:, j]) for j, table in enumerate(self.embeddings)]
        deep = self.deep(torch.cat([batch.dense, *embedded], dim=1))
        wide = self.cross(batch.wide) + self.linear(batch.dense)
        return (deep + wide).squeeze(1)


class Ensemble(nn.Module):
    """Networks trained from different seeds on the same data; the logit is their mean (less variance)."""

    def __init__(self, config: WideDeepConfig, members: int) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(WideDeep(config) for _ in range(members))

    def forward(self, batch: Encoded) -> torch.Tensor:
        return torch.stack([member(batch) for member in self.members]).mean(dim=0)


class FoldedEnsemble:
    """`Ensemble.forward` in eval mode with the members folded together: what serving runs per request.

    Torch dispatches each of an ensemble's ~70 small ops separately, which for one list of ~100 rows costs more
    than the arithmetic. Folded: each categorical column's embeddings are multiplied into every member's first
    layer once, at load (a table of vocabulary x members*width), so the members' first layers are one matmul
    plus a gather per column; the later layers of all members are one batched matmul each; the wide parts
    (hashed crosses, linear) and the output layers average into one. Torch, not numpy: the process's one
    intra-op thread (`torch.set_num_threads`) holds here too, where numpy's BLAS would start a pool of its own.
    Equal to the torch forward up to float32 rounding (`tests/training/test_ranker.py`).
    """

    def __init__(self, model: Ensemble) -> None:
        config, members = model.config, [cast(WideDeep, member) for member in model.members]
        self.members, dense, width = len(members), config.dense, config.embedding_dim
        layers = [[layer for layer in member.deep if isinstance(layer, nn.Linear)] for member in members]
        with torch.no_grad():
            first = [stack[0].weight.detach().T for stack in layers]  # (deep inputs, width 1) per member
            self.first_dense = torch.cat([w[:dense] for w in first], dim=1).contiguous()
            self.first_bias = torch.cat([stack[0].bias.detach() for stack in layers])
            # every categorical column's folded table stacked into one, column j's rows from offsets[j] on
            sizes = config.categorical_sizes
            folded = [torch.cat([cast(nn.Embedding, m.embeddings[j]).weight.detach()
                                 @ w[dense + j * width:dense + (j + 1) * width] for m, w in zip(members, first)], dim=1)
                      for j in range(len(sizes))]
            self.table = torch.cat(folded).contiguous() if folded else torch.zeros(0)
            self.offsets = torch.tensor([sum(sizes[:j]) for j in range(len(sizes))], dtype=torch.int64)
            # later layers: (members, in, out) weights and (members, 1, out) biases, one batched matmul each
            self.rest = [(torch.stack([stack[i].weight.detach().T for stack in layers]).contiguous(),
                          torch.stack([stack[i].bias.detach() for stack in layers]).unsqueeze(1))
                         for i in range(1, len(layers[0]))]
            self.cross = torch.stack([m.cross.weight.detach() for m in members]).mean(dim=0)  # (buckets, 1)
            self.linear = torch.stack([m.linear.weight.detach()[0] for m in members]).mean(dim=0)
            self.linear_bias = torch.stack([m.linear.bias.detach()[0] for m in members]).mean()
        self.width = first[0].shape[1]

    @torch.no_grad()
    def __call__(self, batch: Encoded) -> np.ndarray:
        rows = len(batch.dense)
        h = torch.addmm(self.first_bias, batch.dense, self.first_dense)
        if len(self.offsets):
            h += nn.functional.embedding_bag(batch.categorical + self.offsets, self.table, mode="sum")
        x = h.view(rows, self.members, self.width).transpose(0, 1)  # (members, rows, width)
        for weight, bias in self.rest:
            x = torch.baddbmm(bias, torch.relu(x), weight)  # ReLU after every layer but the output
        deep = x[:, :, 0].mean(dim=0)
        wide = nn.functional.embedding_bag(batch.wide, self.cross, mode="sum")[:, 0] + batch.dense @ self.linear \
            + self.linear_bias
        return (deep + wide).numpy()


@dataclass
class WideDeepRanker:
    """The `bento_services.pipeline.contracts.Ranker` implementation: encoder + network, scores are logits."""

    version: str
    encoder: FeatureEncoder
    model: Ensemble
    metadata: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def score(self, features: dict[str, list[object]], candidate_scores: np.ndarray,
              embedding_scores: np.ndarray) -> np.ndarray:
        if len(candidate_scores) == 0:
            return np.zeros(0, dtype=np.float32)
        return self._folded()(self.encoder.encode(features, candidate_scores, embedding_scores))

    def _folded(self) -> FoldedEnsemble:
        """The folded copy of the network, rebuilt when the network was replaced or its weights changed since:
        an optimiser step and `load_state_dict` write every tensor in place, which bumps its version counter, so
        the first and last tensors' counters tell (reading all ~60 would cost more than the scoring saves)."""
        model = self.model
        ends = self.__dict__.get("_ends")
        if ends is None or ends[0] is not model:
            parameters = list(model.parameters())
            ends = self.__dict__["_ends"] = (model, parameters[0], parameters[-1])
        versions = (id(model), ends[1]._version, ends[2]._version)
        cached = self.__dict__.get("_folded_cache")
        if cached is None or cached[0] != versions:
            cached = self.__dict__["_folded_cache"] = (versions, FoldedEnsemble(self.model))
        return cached[1]

    @torch.no_grad()
    def score_lists(self, features: pd.DataFrame, candidate_scores: np.ndarray, embedding_scores: np.ndarray,
                    groups: np.ndarray, batch: int = 65_536) -> np.ndarray:
        """Scores of many lists at once (offline evaluation); same values as `score` per list."""
        self.model.eval()
        encoded = self.encoder.encode(features, candidate_scores, embedding_scores, groups)
        return torch.cat([self.model(_rows(encoded, slice(s, s + batch)))
                          for s in range(0, len(groups), batch)]).numpy()


def _rows(encoded: Encoded, rows: slice | torch.Tensor) -> Encoded:
    return Encoded(encoded.dense[rows], encoded.categorical[rows], encoded.wide[rows])


# -- checkpoints and the model store ------------------------------------------------------------------------
MODEL_NAME = "ranker"
CHECKPOINT = "ranker.pt"


def to_checkpoint(ranker: WideDeepRanker) -> dict[str, Any]:
    """Everything `from_checkpoint` needs to rebuild the ranker: encoder state, network config and weights."""
    return {"encoder": ranker.encoder.state(), "config": asdict(ranker.model.config),
            "members": len(ranker.model.members), "state": ranker.model.state_dict()}


def ranker_from_path(path: Path, version: str, metadata: dict[str, Any] | None = None) -> WideDeepRanker:
    """Rebuild a ranker from its checkpoint file (a BentoML model's folder holds one)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config = checkpoint["config"]
    config = WideDeepConfig(**{**config, "categorical_sizes": tuple(config["categorical_sizes"]),
                               "hidden": tuple(config["hidden"])})
    net = Ensemble(config, checkpoint["members"])
    net.load_state_dict(checkpoint["state"])
    net.eval()
    return WideDeepRanker(version, FeatureEncoder.from_state(checkpoint["encoder"]), net, metadata or {})


def load_ranker(tag: str = f"{MODEL_NAME}:latest", home: Path | None = None) -> WideDeepRanker:
    """The ranker stored under ``tag``, ready to `score` (implements `bento_services.pipeline.contracts.Ranker`)."""
    model = bentoml.models.get(tag, _model_store=model_store(home))
    return ranker_from_path(Path(model.path_of(CHECKPOINT)), str(model.tag.version), dict(model.info.metadata))
