"""`sqd.server.turning.detect_turning_points`, the entry point scripts use (DESIGN.md, contracts); the detector
lives in `sqd.server.alerts.turning`."""

from sqd.server.alerts.turning import TurningPoint, detect_turning_points

__all__ = ["TurningPoint", "detect_turning_points"]
