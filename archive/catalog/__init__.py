"""The SQL catalog: models, engine setup and migrations."""
