"""Storage: the database (`db`, `models`, `migrate`), series points and rollups (`points_store`, `bulk_sql`,
`series_query`, `export`), runs and their records (`runs_store`, `records_store`, `samples`)."""
