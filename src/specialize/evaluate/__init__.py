"""Evaluation: metrics with confidence intervals, task eval, the retention suite, drift."""
