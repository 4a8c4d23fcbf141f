# SPDX-License-Identifier: BSD-2-Clause
"""Test-only designs: small RTL wrappers that exist to exercise the harness and the bridge."""
