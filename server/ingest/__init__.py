"""Ingest: the consumer of the `ingest` stream (`consumer`: commit → fan out → ack) and what applying a batch of
events to the database means (`apply`)."""
