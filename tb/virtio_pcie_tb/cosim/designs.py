# SPDX-License-Identifier: BSD-2-Clause
"""Which RTL a co-simulation runs: a small registry, so that swapping in a device is one call.

A :class:`CosimDesign` names an Amaranth component factory by import path (the simulator
process imports it again), its parameters, the virtio device it presents to Linux and the guest
script that checks it by default. ``virtio-pcie cosim --device blk|net [--transitional]`` runs
the design registered for that device with :func:`register`; ``--design NAME`` or
``--design module:callable`` picks one explicitly. The top level must have the four TLP streams
(``rx_req``, ``tx_cpl``, ``tx_req``, ``rx_cpl``) and ``clk``/``rst``.

Registered here:

* ``blk`` and ``net``: :class:`virtio_pcie.top.VirtioPcieDevice` as virtio-blk (the run's image
  file on its AXI4 ``medium`` port, its size on the ``capacity`` input) and virtio-net (two
  queue pairs; the testbench's network peer on ``mac_tx``/``mac_rx``), modern only; what
  ``--device blk|net`` runs. They are built exactly as the system tests build them
  (:func:`virtio_pcie_tb.system.build_system`), so a test run compiles each once.
* ``blk-transitional`` and ``net-transitional``: with the legacy (virtio 0.9.5) I/O BAR and
  transitional IDs (blk: a fixed 32 MiB); what ``--device blk|net --transitional`` runs.
* ``minimal``: the foundation's minimal endpoint (1af4:10ff, a bare type-0 header), which proves
  the path (QEMU → vfio-user → TLPs → RTL and back) with nothing else in the way.
* ``model``: a Python endpoint behind RTL FIFOs (BARs of every kind, MSI-X, INTx, DMA).

Another top plugs in with one call::

    register(CosimDesign("myblk", "mypkg.top:MyBlk", {"data_width": 128}, device="blk",
                         guest_script="blk.sh",
                         testbench="virtio_pcie_tb.models.cosim_backends:attach_blk"),
             device="blk")
"""

import dataclasses
import importlib
import re
from dataclasses import dataclass, field

__all__ = ["CosimDesign", "DESIGNS", "register", "resolve", "load_factory", "build_design",
           "DesignError"]


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
    builder : ``"module:callable"`` that builds the design as ``callable(params)`` and returns
        the harness's :class:`~virtio_pcie_tb.harness.Build` (to share a build with other
        tests); by default the launcher calls :func:`~virtio_pcie_tb.harness.build` with the
        factory.
    build_options : keyword arguments of the builder (e.g. ``ports_only``).
    """
    name: str
    factory: str
    params: dict = field(default_factory=dict)
    device: str | None = None
    guest_script: str = "identify.sh"
    description: str = ""
    testbench: str | None = None
    append: str = ""
    builder: str | None = None
    build_options: dict = field(default_factory=dict)

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

_TOP = "virtio_pcie.top:VirtioPcieDevice"
_BUILDER = "virtio_pcie_tb.system:build_system"


def _top_params(device, transitional):
    """The system tests' builds, so that a test run compiles each design once: blk is the
    project's main build (four request queues, the size from the image on the ``capacity``
    input), blk-transitional the transitional system tests' (two queues, 32 MiB); net the modern
    net system tests' (two queue pairs, so Linux also sets the pair count through the control
    queue), net-transitional one pair at the standard MTU."""
    from ..system import MAIN_DESIGNS, design_params
    if device == "blk":
        if transitional:
            return design_params("blk", 128, transitional=True, queues=2)
        return dict(MAIN_DESIGNS["blk"])
    return design_params("net", 128, transitional=transitional, queues=1 if transitional else 2)


def register(design, *, device=None, transitional=False):
    """Add ``design``; with ``device``, make it what ``--device device`` runs."""
    DESIGNS[design.name] = design
    if device is not None:
        DEVICE_DESIGNS[(device, bool(transitional))] = design.name
    return design


for _device, _what in (("blk", "virtio-blk, the disk image on the AXI4 medium"),
                       ("net", "virtio-net, the testbench's peer on the MAC streams")):
    for _transitional in (False, True):
        register(CosimDesign(
            _device + ("-transitional" if _transitional else ""), _TOP,
            _top_params(_device, _transitional), device=_device, guest_script=f"{_device}.sh",
            description=f"VirtioPcieDevice, {'transitional' if _transitional else 'modern'} "
                        f"{_what}",
            testbench=f"virtio_pcie_tb.models.cosim_backends:attach_{_device}",
            builder=_BUILDER),
            device=_device, transitional=_transitional)


def build_design(design, **options):
    """Build ``design`` (once; the harness caches) and return the harness's Build."""
    if design.builder is not None:
        return load_factory(design.builder)(design.params,
                                            **{**design.build_options, **options})
    from .. import harness
    return harness.build(load_factory(design.factory), design.params, name=design.build_name,
                         **options)


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
