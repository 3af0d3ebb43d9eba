"""The JSON API under /api/: token or session auth, errors that name the
field, 4xx for every bad input. Its OpenAPI schema is webapp/api/schema.py."""
