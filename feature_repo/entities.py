"""Entities: the keys every feature hangs on."""

from feast import Entity, ValueType

user = Entity(
    name="user", join_keys=["user_id"], value_type=ValueType.STRING,
    description="A person receiving recommendations (users.user_id in the catalog).",
)
item = Entity(
    name="item", join_keys=["item_id"], value_type=ValueType.STRING,
    description="A recommendable item (items.item_id in the catalog).",
)
