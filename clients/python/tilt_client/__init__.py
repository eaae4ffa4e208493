"""Tilt Python SDK."""
