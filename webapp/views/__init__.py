"""Views, one module per area of the site; webapp/urls.py lists them all."""
