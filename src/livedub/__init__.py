"""livedub: live broadcast dubbing (stream worker, echo STS service, orchestrator)."""

__version__ = "0.1.0"
