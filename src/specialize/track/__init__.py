"""Tracking: run registry, metrics logging, reports and plots."""
