"""SQD: Stability, Quality and Diversity monitoring for GAN training."""

__version__ = "0.1.0"
