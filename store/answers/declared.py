"""How a read answer is declared: fields with their SQL, response field and description.

An `Answer` is a JSON object Postgres builds in one expression (`Answer.sql`), so a page
of items costs Python nothing per item, and the marshmallow schema that documents it
(`Answer.schema`: the OpenAPI component) is made from the same fields in the same order.
Adding a field is one `Field(...)` line in the answer's module: the statement, the
document and the key order follow.

Every key is always present (`required`); `nullable` says whether it can be null. A
field's SQL is an expression over the row the answer is built from; a field that a
capped answer shows in part gives a function of `capped` instead (the feed caps an item,
`GET .../feed/{id}` answers it whole).
"""

from __future__ import annotations

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
    sql: Sql | Answer
    shape: Shape | None = None  # None for a nested answer (its schema, nested)
    description: str = ""
    nullable: bool = False

    def expression(self, capped: bool) -> str:
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

    def sql(self, capped: bool = True) -> str:
        """The `json_build_object(...)` of this answer, keys in the declared order."""
        pairs = ",\n    ".join(f"'{field.name}', {field.expression(capped)}" for field in self.fields)
        return f"json_build_object(\n    {pairs}\n)"

    @cached_property
    def schema(self) -> type[Schema]:
        """The marshmallow schema of this answer (`{name}Schema`, so apispec names it `name`)."""
        attributes: dict[str, Any] = {field.attribute: field.response_field() for field in self.fields}
        return cast(type[Schema], type(f"{self.name}Schema", (Schema,), attributes))
