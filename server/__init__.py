"""The SQD server: REST v1, live events, ingest consumer, SQL storage (`sqd server`)."""
