"""Alerts: the turning-point detector (`turning`, `signals`), user rules (`rules`, `rules_store`), the engine that
runs both on ingest (`engine`), what an alert does (`actions`, `webhooks`) and their tables (`models`)."""
