"""The two-tower retrieval model: a user tower and an item tower meeting in one 128-d space.

User tower: the user's id and the mean of their recent items' id embeddings. Item tower: the item's
id, its category, and bags of its tags and title words. Both end in an MLP and L2 normalisation, so
a dot product is a cosine. Training drops item ids at random so the content path alone can place
a new item (the item cold start); unknown ids map to index 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TwoTowerConfig:
    n_users: int
    n_items: int
    n_categories: int
    n_tags: int
    n_words: int
    dim: int = 128
    hidden: int = 256
    history: int = 20
    temperature: float = 0.05
    id_dropout: float = 0.1
    sparse: bool = False  # sparse gradients for the id tables (large vocabularies; trained with SparseAdam)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _mlp(inputs: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, out))


class TwoTower(nn.Module):
    def __init__(self, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.user_id = nn.Embedding(config.n_users + 1, d, sparse=config.sparse)
        self.item_id = nn.Embedding(config.n_items + 1, d, padding_idx=0, sparse=config.sparse)
        self.category = nn.Embedding(config.n_categories + 1, d // 2)
        self.tags = nn.EmbeddingBag(config.n_tags + 1, d // 2, mode="mean", padding_idx=0)
        self.words = nn.EmbeddingBag(config.n_words + 1, d // 2, mode="mean", padding_idx=0)
        self.user_mlp = _mlp(2 * d, config.hidden, d)
        self.item_mlp = _mlp(d + 3 * (d // 2), config.hidden, d)
        for table in (self.user_id, self.item_id, self.category, self.tags, self.words):
            nn.init.normal_(table.weight, std=0.05)

    def optimisers(self, learning_rate: float) -> list[torch.optim.Optimizer]:
        """Adam; with sparse id tables, SparseAdam for those (only the rows a batch touched move)."""
        if not self.config.sparse:
            return [torch.optim.Adam(self.parameters(), lr=learning_rate)]
        ids = [self.user_id.weight, self.item_id.weight]
        rest = [p for name, p in self.named_parameters() if name not in ("user_id.weight", "item_id.weight")]
        return [torch.optim.SparseAdam(ids, lr=learning_rate), torch.optim.Adam(rest, lr=learning_rate)]

    def users(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Unit vectors of users (ids, 0 = unknown) with their recent items (B × history, 0-padded)."""
        seen = self.item_id(history)
        mask = (history > 0).unsqueeze(-1).float()
        recent = (seen * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return F.normalize(self.user_mlp(torch.cat([self.user_id(user), recent], dim=-1)), dim=-1)

    def items(
        self, item: torch.Tensor, category: torch.Tensor, tags: torch.Tensor, words: torch.Tensor
    ) -> torch.Tensor:
        """Unit vectors of items from their id (0 = unknown or dropped) and content."""
        if self.training and self.config.id_dropout > 0:
            item = item * (torch.rand(item.shape, device=item.device) >= self.config.id_dropout).long()
        parts = [self.item_id(item), self.category(category), self.tags(tags), self.words(words)]
        return F.normalize(self.item_mlp(torch.cat(parts, dim=-1)), dim=-1)

    def loss(
        self, users: torch.Tensor, items: torch.Tensor, item_ids: torch.Tensor, log_q: torch.Tensor | None = None
    ) -> torch.Tensor:
        """In-batch softmax: each user's item is the positive, the batch's other items the negatives.

        A batch item equal to the positive is not a negative (masked), so popular items are not
        pushed away from the users who chose them. `log_q`, the log of each item's share of the
        training events, corrects the bias of in-batch negatives towards popular items (logQ).
        """
        logits = users @ items.T / self.config.temperature
        if log_q is not None:
            logits = logits - log_q.unsqueeze(0)
        same = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
        logits = logits.masked_fill(same & ~torch.eye(len(item_ids), dtype=torch.bool, device=logits.device), -1e9)
        return F.cross_entropy(logits, torch.arange(len(item_ids), device=logits.device))
