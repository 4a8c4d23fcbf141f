# SPDX-License-Identifier: BSD-2-Clause
"""Benchmarks: functions that simulate a design under load and return table rows (dicts)."""
