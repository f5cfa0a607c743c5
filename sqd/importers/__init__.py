"""Importers: runs recorded by other tools (TensorBoard event files, an MLflow store, StyleGAN/R3GAN
`stats.jsonl`) sent to an SQD server over REST, so they sit next to SQD's own runs. See docs/coming-from.md."""
