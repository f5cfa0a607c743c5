"""Storage: the database (`db`, `models`, `migrate`), series in compressed chunks (`chunk_codec`, `points_store`
writes, `chunk_read` reads, `series_query`, `export`, `retention` and `gc`), runs and their records (`runs_store`,
`records_store`, `samples`)."""
