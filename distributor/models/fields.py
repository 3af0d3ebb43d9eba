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
