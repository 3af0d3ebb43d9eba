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
    """The values at several key paths of a JSON column, and last the bin
    ``floor(value * scale)`` of one number in it, as the text of one JSON
    array (``json.loads`` it), null where a key is missing.

    SQLite parses the document's text for every ``json_extract``: here it
    parses it twice (one ``json_extract`` with every path, one for the bin),
    not once per key, which is what makes grouping 10^5 task-sets by a dozen
    label keys affordable there (``distributor.results``). PostgreSQL's jsonb
    is read in place (``#>`` per path; a subquery that copied the document
    once without its task rows measured slower).
    """

    output_field = models.TextField()

    def __init__(self, column: str, paths: list[tuple[str, ...]], bin_of: tuple[str, int]):
        super().__init__(models.F(column))
        self.paths = [tuple(path) for path in paths]
        self.bin_key, self.bin_scale = bin_of

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        places = ", ".join("%s" for _ in self.paths)
        bin_sql = f"CAST(json_extract({sql}, %s) * {int(self.bin_scale)} + 1e-9 AS INTEGER)"  # U ≥ 0: floor
        return (f"json_insert(json_extract({sql}, {places}), '$[#]', {bin_sql})",
                [*params, *("$." + ".".join(path) for path in self.paths), *params, f"$.{self.bin_key}"])

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        values = ", ".join(f"{sql} #> %s::text[]" for _ in self.paths)
        bin_sql = f"floor(({sql} ->> %s)::float8 * {int(self.bin_scale)} + 1e-9)"
        return (f"jsonb_build_array({values}, {bin_sql})::text",
                [*(value for path in self.paths for value in (*params, list(path))), *params, self.bin_key])

    def as_sql(self, compiler, connection, **extra):
        raise NotImplementedError(f"JSONValues: no {connection.vendor} support (SQLite and PostgreSQL only)")
