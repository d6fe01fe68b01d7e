"""How a read answer is declared: fields with their SQL, response field and description.

An `Answer` is a JSON object Postgres builds in one expression (`Answer.sql`), so a page
of items costs Python nothing per item, and the marshmallow schema that documents it
(`Answer.schema`: the OpenAPI component) is made from the same fields in the same order.
Adding a field is one `Field(...)` line in the answer's module: the statement, the
document and the key order follow.

Every key is always present (`required`); `nullable` says whether it can be null. A
field's SQL is an expression over the row the answer is built from; a field that a
capped answer shows in part gives a function of `capped` instead (the feed caps an item,
`GET .../feed/{id}` answers it whole). A field whose SQL is None is one the read adds
after Postgres's keys (a page's `next_cursor`, known once the page is read):
`Answer.completed` writes it into the JSON text Postgres built, so the response still
costs Python nothing per item.

A list of answers is answered as a page, `{"data": [...], "next_cursor": ...}`
(`page_schema`).
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from marshmallow import Schema, fields

# An SQL expression, or one by whether the answer is capped.
Sql = str | Callable[[bool], str]
# A marshmallow field class (or a partial of one) taking the common keyword arguments.
Shape = Callable[..., fields.Field[Any]]


@dataclass(frozen=True)
class Field:
    """One key of an answer: its SQL, its response field and what it means."""

    name: str
    sql: Sql | Answer | None  # None: the read adds it, after Postgres's keys
    shape: Shape | None = None  # None for a nested answer (its schema, nested)
    description: str = ""
    nullable: bool = False

    def expression(self, capped: bool) -> str:
        if self.sql is None:
            raise TypeError(f"{self.name}: the read adds this key; Postgres does not build it")
        if isinstance(self.sql, Answer):
            return self.sql.sql(capped)
        return self.sql if isinstance(self.sql, str) else self.sql(capped)

    def response_field(self) -> fields.Field[Any]:
        options: dict[str, Any] = {"required": True}
        if self.nullable:
            options["allow_none"] = True
        if self.description:
            options["metadata"] = {"description": self.description}
        if keyword.iskeyword(self.name):  # `from`: the attribute is `from_`, the key `from`
            options["data_key"] = self.name
        if isinstance(self.sql, Answer):
            return fields.Nested(self.sql.schema, **options)
        if self.shape is None:
            raise TypeError(f"{self.name}: a field that is not a nested answer needs a shape")
        return self.shape(**options)

    @property
    def attribute(self) -> str:
        return self.name + "_" if keyword.iskeyword(self.name) else self.name


@dataclass(frozen=True)
class Answer:
    """A JSON object of the API, built by Postgres: `name` is its OpenAPI component."""

    name: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        built = [field.sql is not None for field in self.fields]
        if not any(built) or built != sorted(built, reverse=True):
            raise TypeError(f"{self.name}: Postgres builds its first keys; the ones the read adds come last")

    def sql(self, capped: bool = True) -> str:
        """The `json_build_object(...)` of this answer, keys in the declared order."""
        pairs = ",\n    ".join(
            f"'{field.name}', {field.expression(capped)}" for field in self.fields if field.sql is not None
        )
        return f"json_build_object(\n    {pairs}\n)"

    def completed(self, built: str, **added: Any) -> str:
        """The JSON text Postgres built (`sql`) with the keys the read adds, in the declared order."""
        names = [field.name for field in self.fields if field.sql is None]
        if sorted(added) != sorted(names) or not built.endswith("}"):
            raise ValueError(f"{self.name}: give exactly {names} to a built JSON object")
        tail = "".join(f", {json.dumps(name)} : {json.dumps(added[name])}" for name in names)
        return built[:-1] + tail + "}"

    @cached_property
    def schema(self) -> type[Schema]:
        """The marshmallow schema of this answer (`{name}Schema`, so apispec names it `name`).

        A route's docstring names it `{name}Schema`, or, where another schema has that
        name, `store.answers.declared.{name}Schema` (its path in marshmallow's registry)."""
        attributes: dict[str, Any] = {field.attribute: field.response_field() for field in self.fields}
        return _schema(f"{self.name}Schema", attributes)


def page_schema(name: str, item: type[Schema], next_cursor: str | None = None) -> type[Schema]:
    """The schema of a page of `item`s, `{"data": [...], "next_cursor": ...}` (OpenAPI: `name`).

    `next_cursor`: its description (null at the end, the page's own words otherwise)."""
    cursor: dict[str, Any] = {"required": True, "allow_none": True}
    if next_cursor:
        cursor["metadata"] = {"description": next_cursor}
    attributes = {
        "data": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(**cursor),
    }
    return _schema(f"{name}Schema", attributes)


def _schema(name: str, attributes: dict[str, Any]) -> type[Schema]:
    # Made here, so marshmallow's registry knows it as `store.answers.declared.{name}` too.
    return cast(type[Schema], type(name, (Schema,), {**attributes, "__module__": __name__}))
