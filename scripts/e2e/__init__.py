"""Helpers of the end-to-end business day (scripts/e2e_day.py)."""
