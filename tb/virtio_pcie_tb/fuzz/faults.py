# SPDX-License-Identifier: BSD-2-Clause
"""Faulty host memory: completions that report errors, carry poisoned data, or never come.

:class:`FaultInjector` is the bridge's ``completion_hook``
(:class:`~virtio_pcie_tb.models.pcie_bridge.DutPcieDevice`). While a fault period is active each
memory read of the device is hit with a probability; a hit read is answered in one of these ways
(PCIe Base 4.0 §2.2.9, §2.7.2, §2.8):

* ``ur`` / ``ca``: one completion with status Unsupported Request / Completer Abort, no data;
* ``poison``: one of its completions with the EP bit set (data present but unusable);
* ``drop``: never answered (the device's completion timeout must end the request);
* ``partial``: the first completion arrives, the rest never do.
"""

from virtio_pcie.spec.pcie import CplStatus

from ..models.tlp import RawTlp, status_completion

__all__ = ["FaultInjector", "FAULT_KINDS"]

FAULT_KINDS = ("ur", "ca", "poison", "drop", "partial")


class FaultInjector:
    """Completion hook of the bridge; idle until :meth:`start`."""

    def __init__(self, bridge):
        self.bridge = bridge
        bridge.completion_hook = self.hook
        self.active = False
        self.kinds = ()
        self.rate = 0.0
        self.rng = None
        self._decided = {}      # id(request) -> kind or None
        self.injected = 0
        self.by_kind = dict.fromkeys(FAULT_KINDS, 0)

    def start(self, rng):
        """A fault period: one or more kinds, a rate from 5 % to 60 %."""
        self.rng = rng
        self.active = True
        self.kinds = tuple(rng.sample(FAULT_KINDS, rng.randint(1, 3)))
        self.rate = rng.choice([0.05, 0.15, 0.3, 0.6])

    def stop(self):
        self.active = False
        self._decided = {}

    def reset_counts(self):
        self.injected = 0
        self.by_kind = dict.fromkeys(FAULT_KINDS, 0)

    def hook(self, request, cpl):
        key = id(request)
        if key not in self._decided:
            kind = None
            if self.active and self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
                self.injected += 1
                self.by_kind[kind] += 1
            self._decided[key] = [kind, 0]
        state = self._decided[key]
        kind, seen = state
        state[1] += 1
        if self.bridge._is_final(cpl):
            del self._decided[key]
        if kind is None:
            return cpl
        if kind == "ur":
            return [status_completion(cpl, CplStatus.UR)] if seen == 0 else []
        if kind == "ca":
            return [status_completion(cpl, CplStatus.CA)] if seen == 0 else []
        if kind == "poison":
            if seen == 0:
                out = RawTlp(cpl.hdr, cpl.payload)
                out["dw0.ep"] = 1
                return [out]
            return cpl
        if kind == "drop":
            return []
        return cpl if seen == 0 else []          # partial
