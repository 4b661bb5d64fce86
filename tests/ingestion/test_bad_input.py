"""Bad input stops the import with an error naming file, row and column, and writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingestion.generic import GenericSource
from ingestion.importer import Importer
from ingestion.movielens import MovieLensSource
from ingestion.sources import Source
from recsys.errors import ImportValidationError
from recsys.stores import CatalogStore, InteractionStore, Lake

INTERACTIONS = """user_id,item_id,timestamp,action_type,value,session_id,context
u1,i1,2024-01-01T10:00:00Z,view,,s1,
u1,i1,1704103260,rate,4.5,s1,"{""device"": ""ios""}"
u2,i2,2024-01-02T08:30:00+01:00,click,,,
"""
ITEMS = """item_id,title,category,tags
i1,First,books,a|b
i2,Second,music,
"""


def write_dataset(folder: Path, interactions: str = INTERACTIONS, items: str | None = ITEMS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text(interactions)
    if items is not None:
        (folder / "items.csv").write_text(items)
    return folder


def replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


CASES = {
    "missing column": (
        {"interactions": INTERACTIONS.replace("timestamp,", "when,", 1)},
        ("interactions.csv", "column 'timestamp'", "missing required column"),
    ),
    "wrong type": (
        {"interactions": replace_line(INTERACTIONS, 3, "u1,i1,1704103260,rate,four,s1,")},
        ("interactions.csv", "line 3", "column 'value'", "not a valid number"),
    ),
    "unparseable timestamp": (
        {"interactions": replace_line(INTERACTIONS, 4, "u2,i2,yesterday,click,,,")},
        ("interactions.csv", "line 4", "column 'timestamp'", "unparseable timestamp"),
    ),
    "unknown action": (
        {"interactions": replace_line(INTERACTIONS, 2, "u1,i1,2024-01-01T10:00:00Z,teleport,,s1,")},
        ("interactions.csv", "line 2", "column 'action_type'", "must be one of"),
    ),
    "bad context": (
        {"interactions": replace_line(INTERACTIONS, 2, 'u1,i1,2024-01-01T10:00:00Z,view,,s1,"[1, 2]"')},
        ("interactions.csv", "line 2", "column 'context'", "JSON object"),
    ),
    "empty user id": (
        {"interactions": replace_line(INTERACTIONS, 4, ",i2,2024-01-02T08:30:00Z,click,,,")},
        ("interactions.csv", "line 4", "column 'user_id'", "empty value"),
    ),
    "unknown item": (
        {"interactions": replace_line(INTERACTIONS, 4, "u2,i9,2024-01-02T08:30:00Z,click,,,")},
        ("interactions.csv", "line 4", "column 'item_id'", "'i9' is not in the items file"),
    ),
    "duplicate item id": (
        {"items": ITEMS + "i1,Again,books,\n"},
        ("items.csv", "line 4", "column 'item_id'", "duplicate id 'i1'"),
    ),
    "empty file": ({"interactions": ""}, ("interactions.csv", "file is empty")),
    "header only": (
        {"interactions": INTERACTIONS.splitlines()[0] + "\n"},
        ("interactions.csv", "no data rows"),
    ),
}


def assert_nothing_written(catalog: CatalogStore, interactions: InteractionStore, lake: Lake) -> None:
    assert catalog.counts() == {"users": 0, "items": 0, "precomputed_recommendations": 0}
    assert interactions.counts() == {"interactions": 0, "item_interactions": 0}
    assert lake.count_interactions() == 0 and not lake.catalog_path.exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_generic_input_is_rejected_whole(
    case: str, tmp_path: Path, catalog: CatalogStore, interactions: InteractionStore, lake: Lake
) -> None:
    files, fragments = CASES[case]
    folder = write_dataset(tmp_path / "in", **files)  # type: ignore[arg-type]
    with pytest.raises(ImportValidationError) as raised:
        Importer(catalog, interactions, lake, show_progress=False).run(GenericSource(folder))
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert raised.value.http_status == 400
    assert_nothing_written(catalog, interactions, lake)


def test_movielens_errors_name_the_movielens_file_and_column(
    movielens_dir: Path, tmp_path: Path, catalog: CatalogStore, interactions: InteractionStore, lake: Lake
) -> None:
    broken = tmp_path / "ml"
    shutil.copytree(movielens_dir, broken)
    ratings = (broken / "ratings.csv").read_text().splitlines()
    ratings[500] = ratings[500].rsplit(",", 1)[0] + ",last tuesday"
    (broken / "ratings.csv").write_text("\n".join(ratings) + "\n")
    with pytest.raises(ImportValidationError, match=r"ratings.csv, line 501, column 'timestamp'"):
        Importer(catalog, interactions, lake, show_progress=False).run(MovieLensSource(broken))
    assert_nothing_written(catalog, interactions, lake)


def test_good_generic_input_round_trips(
    tmp_path: Path, catalog: CatalogStore, interactions: InteractionStore, lake: Lake
) -> None:
    folder = write_dataset(tmp_path / "in")
    source: Source = GenericSource(folder)
    Importer(catalog, interactions, lake, show_progress=False).run(source)
    history = interactions.user_events("u1")
    assert list(history["action_type"]) == ["rate", "view"]
    assert history["value"].tolist()[0] == 4.5 and history["context"].tolist()[0] == '{"device":"ios"}'
    assert str(interactions.user_events("u2")["event_time"].iloc[0]) == "2024-01-02 07:30:00+00:00"
    item = catalog.get_item("i1")
    assert item is not None and item["tags"] == ["a", "b"] and item["avg_rating"] == 4.5
    assert catalog.counts()["users"] == 2
