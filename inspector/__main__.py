"""``python -m inspector`` is the same as the ``inspector`` command."""

from inspector.cli import app

app()
