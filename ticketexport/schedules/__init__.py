"""Schedules: saved export requests that the workers run on a cadence and deliver."""
