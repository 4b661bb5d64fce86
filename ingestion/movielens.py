"""The MovieLens layout (``movies.csv``, ``links.csv``, ``ratings.csv``, ``tags.csv``) as a source.

Movies become items (category and subcategory from the first two genres, genres as tags; year,
genres and the IMDb/TMDb links in ``content_features``); ratings become ``rate`` interactions with
the rating as value, tags become ``tag`` interactions with the tag text in context.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ingestion.generic import canonical_interactions
from ingestion.sources import ITEM_METADATA, Chunk, Source
from ingestion.validation import Column, DataFile, require_unique

MOVIES = (Column("movieId", "int"), Column("title"), Column("genres"))
LINKS = (Column("movieId", "int"), Column("imdbId", nullable=True), Column("tmdbId", nullable=True))
RATINGS = (
    Column("userId", "int"), Column("movieId", "int"), Column("rating", "float"), Column("timestamp", "timestamp"),
)
TAGS = (Column("userId", "int"), Column("movieId", "int"), Column("tag"), Column("timestamp", "timestamp"))
NO_GENRES = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class MovieLensSource(Source):
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.name = f"movielens:{self.directory}"

    def items(self) -> pd.DataFrame:
        movies_file = DataFile(self.directory / "movies.csv", MOVIES)
        movies = movies_file.read()
        require_unique(movies_file, movies, "movieId")
        links_file = DataFile(self.directory / "links.csv", LINKS)
        links = links_file.read()
        require_unique(links_file, links, "movieId")
        links = links.set_index("movieId")
        genres = movies["genres"].map(lambda g: [] if g == NO_GENRES else g.split("|"))
        items = pd.DataFrame(index=movies.index)
        items["item_id"] = movies["movieId"].astype("string")
        items["title"] = movies["title"]
        items["category"] = genres.map(lambda g: g[0] if g else None)
        items["subcategory"] = genres.map(lambda g: g[1] if len(g) > 1 else None)
        items["tags"] = genres
        items["content_features"] = [
            _content_features(title, g, links, movie_id)
            for title, g, movie_id in zip(movies["title"], genres, movies["movieId"])
        ]
        return items.reindex(columns=list(ITEM_METADATA))

    def users(self) -> None:
        return None

    def interaction_chunks(self) -> Iterator[Chunk]:
        ratings_file = DataFile(self.directory / "ratings.csv", RATINGS)
        for chunk in ratings_file.chunks():
            generic = pd.DataFrame({
                "user_id": chunk["userId"].astype("string"), "item_id": chunk["movieId"].astype("string"),
                "timestamp": chunk["timestamp"], "action_type": "rate", "value": chunk["rating"],
            }, index=chunk.index)
            yield Chunk(ratings_file, canonical_interactions(generic, source="movielens"), "movieId")
        tags_file = DataFile(self.directory / "tags.csv", TAGS)
        for chunk in tags_file.chunks():
            generic = pd.DataFrame({
                "user_id": chunk["userId"].astype("string"), "item_id": chunk["movieId"].astype("string"),
                "timestamp": chunk["timestamp"], "action_type": "tag",
                "context": [{"tag": t} for t in chunk["tag"]],
            }, index=chunk.index)
            yield Chunk(tags_file, canonical_interactions(generic, source="movielens"), "movieId")

    def size_hint(self) -> int:
        return sum(
            max(0, sum(1 for _ in open(self.directory / name, "rb")) - 1)
            for name in ("ratings.csv", "tags.csv") if (self.directory / name).exists()
        )


def _content_features(title: str, genres: list[str], links: pd.DataFrame, movie_id: int) -> dict[str, object]:
    year = _YEAR.search(title)
    features: dict[str, object] = {"year": int(year.group(1)) if year else None, "genres": genres}
    if movie_id in links.index:
        imdb, tmdb = links.at[movie_id, "imdbId"], links.at[movie_id, "tmdbId"]
        features["imdb_id"] = None if pd.isna(imdb) else f"tt{imdb}"
        features["tmdb_id"] = None if pd.isna(tmdb) else str(tmdb)
    return features
