"""rules.yaml: the schema, its loading and validation, and hot reloading."""
