# SPDX-License-Identifier: BSD-2-Clause
"""Which RTL a co-simulation runs: a small registry, so that swapping in a device is one call.

A :class:`CosimDesign` names an Amaranth component factory by import path (the simulator
process imports it again), its parameters, the virtio device it presents to Linux and the guest
script that checks it by default. ``virtio-pcie cosim --device blk|net [--transitional]`` runs
the design registered for that device with :func:`register`; ``--design NAME`` or
``--design module:callable`` picks one explicitly. The top level must have the four TLP streams
(``rx_req``, ``tx_cpl``, ``tx_req``, ``rx_cpl``) and ``clk``/``rst``.

Registered here from the start: ``minimal``, the foundation's minimal endpoint (1af4:10ff, a
bare type-0 header), which proves the whole path (QEMU → vfio-user → TLPs → RTL and back) before
a virtio function exists. The virtio-blk and virtio-net tops register themselves as::

    register(CosimDesign("blk", "virtio_pcie.top:VirtioBlkTop", {"data_width": 128},
                         device="blk", guest_script="blk.sh"), device="blk")
"""

import dataclasses
import importlib
import re
from dataclasses import dataclass, field

__all__ = ["CosimDesign", "DESIGNS", "register", "resolve", "load_factory", "DesignError"]


class DesignError(LookupError):
    """No design fits the request; the message says what exists."""


@dataclass(frozen=True)
class CosimDesign:
    """An RTL top for the co-simulation.

    Parameters
    ----------
    name : short name (``--design NAME``).
    factory : ``"module:callable"`` returning the component.
    params : keyword arguments of the factory (JSON-serialisable; ``data_width`` required).
    device : the ``VIRTIO_DEVICE`` it presents (``"blk"``, ``"net"``) or None.
    guest_script : default guest script (a file in ``virtio_pcie_tb/cosim/guest/``).
    description : one line for progress messages.
    testbench : ``"module:callable"`` called in the simulator as ``callable(dut, config)``
        before the RTL comes out of reset, for the device's back end (a disk model, the network
        peer on the MAC streams, a model behind a test design); if what it returns has a
        ``reset()`` method, that is called whenever the RTL is reset.
    append : kernel command-line arguments the design needs.
    """
    name: str
    factory: str
    params: dict = field(default_factory=dict)
    device: str | None = None
    guest_script: str = "identify.sh"
    description: str = ""
    testbench: str | None = None
    append: str = ""

    @property
    def build_name(self):
        """The harness build name: the factory's name in snake case, so that a design shared
        with other tests (the minimal endpoint) is compiled once for both."""
        attr = self.factory.rpartition(":")[2].split(".")[-1]
        return re.sub(r"(?<!^)(?=[A-Z])", "_", attr).lower()

    def __post_init__(self):
        if ":" not in self.factory:
            raise ValueError(f"factory must be 'module:callable', not {self.factory!r}")
        if self.params.get("data_width") not in (64, 128, 256):
            raise ValueError(f"design {self.name!r} needs params['data_width'] of 64, 128 or "
                             f"256, not {self.params.get('data_width')!r}")


DESIGNS = {
    "minimal": CosimDesign(
        "minimal", "virtio_pcie_tb.designs.minimal_endpoint:MinimalEndpoint",
        {"data_width": 128}, device=None, guest_script="identify.sh",
        description="the minimal endpoint (1af4:10ff, type-0 header only)"),
    # A Python endpoint behind RTL FIFOs: 32-bit, 64-bit and I/O BARs, MSI-X, INTx and a DMA
    # engine, for checking the BAR and DMA paths from a real guest before the function exists.
    # 1 MiB at 256 MiB is kept from the kernel for the DMA check (memmap=).
    "model": CosimDesign(
        "model", "virtio_pcie_tb.designs.tlp_crossover:TlpCrossover", {"data_width": 64},
        device=None, guest_script="model.sh",
        description="the Python endpoint model behind TLP FIFOs (BARs, MSI-X, DMA engine)",
        testbench="virtio_pcie_tb.models.endpoint_model:attach", append="memmap=1M$0x10000000"),
}

#: (device, transitional) -> design name
DEVICE_DESIGNS = {}


def register(design, *, device=None, transitional=False):
    """Add ``design``; with ``device``, make it what ``--device device`` runs."""
    DESIGNS[design.name] = design
    if device is not None:
        DEVICE_DESIGNS[(device, bool(transitional))] = design.name
    return design


def load_factory(spec):
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise DesignError(f"cannot load design factory {spec!r}: {e}") from None
    return obj


def resolve(*, device="blk", transitional=False, design=None, data_width=None):
    """The design a command line asks for."""
    if design is not None:
        if design in DESIGNS:
            chosen = DESIGNS[design]
        elif ":" in design:
            load_factory(design)
            chosen = CosimDesign(design.rpartition(":")[2], design,
                                 {"data_width": data_width or 128}, device=device,
                                 guest_script=f"{device}.sh" if device else "identify.sh",
                                 description=design)
        else:
            raise DesignError(f"no design named {design!r}; known: {', '.join(sorted(DESIGNS))}"
                              f" (or give module:callable)")
    else:
        name = DEVICE_DESIGNS.get((device, bool(transitional)))
        if name is None:
            kind = "transitional " if transitional else ""
            raise DesignError(
                f"no {kind}virtio-{device} RTL top is registered for co-simulation yet (see "
                f"virtio_pcie_tb/cosim/designs.py). Try --design minimal to prove the path "
                f"with the minimal endpoint, or --qemu-device to run the {device} guest checks "
                f"against QEMU's own virtio-{device}")
        chosen = DESIGNS[name]
    if data_width is not None and data_width != chosen.params["data_width"]:
        chosen = dataclasses.replace(chosen, params={**chosen.params, "data_width": data_width})
    return chosen
