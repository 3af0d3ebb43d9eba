from __future__ import annotations

import json

from django.db import models


class OrderedJSONField(models.TextField):
    """JSON kept as text, so an object keeps its key order on every database.

    PostgreSQL's jsonb sorts keys; the admission goal is sent to targets as
    XML in the user's order, and its bytes must not depend on the database.
    """

    def from_db_value(self, value, expression, connection):
        return None if value is None else json.loads(value)

    def to_python(self, value):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    def get_prep_value(self, value):
        return None if value is None else json.dumps(value)

    def value_to_string(self, obj):
        return self.get_prep_value(self.value_from_object(obj))


class JSONValues(models.Func):
    """The values at several key paths of a JSON column, as the text of one
    JSON array (``json.loads`` it), in path order, null where a key is missing.

    SQLite parses a JSON document on every ``json_extract``: one call with
    every path reads it once instead of once per key, which is what makes
    grouping 10^5 task-sets by a dozen label keys affordable
    (``distributor.results``). PostgreSQL's jsonb needs no parse.
    """

    output_field = models.TextField()

    def __init__(self, column: str, paths: list[tuple[str, ...]]):
        super().__init__(models.F(column))
        self.paths = [tuple(path) for path in paths]

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        places = ", ".join("%s" for _ in self.paths)
        return f"json_extract({sql}, {places})", [*params, *("$." + ".".join(path) for path in self.paths)]

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        parts = ", ".join(f"{sql} #> %s::text[]" for _ in self.paths)
        return f"jsonb_build_array({parts})::text", [value for path in self.paths for value in (*params, list(path))]

    def as_sql(self, compiler, connection, **extra):
        raise NotImplementedError(f"JSONValues: no {connection.vendor} support (SQLite and PostgreSQL only)")
