"""Helpers for the E2E suite: service lifecycle, publishing, metrics and stream analysis."""
