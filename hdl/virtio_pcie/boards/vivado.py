# SPDX-License-Identifier: BSD-2-Clause
"""The Vivado side of a build plan: the ``pcie_7x`` IP's configuration, and its constraints.

:func:`ip_config` turns a hard-IP plan (``FunctionLayout.hard_ip_plan()``) and a link into the
``CONFIG.*`` properties of the ``pcie_7x`` 3.3 IP (names as in a Vivado-generated ``.xci``; see
:mod:`virtio_pcie.adapters.xilinx7_core` for the sources). :func:`ip_tcl` writes the script that
creates the IP, generates it, and patches the next pointer of its last capability
(``MSIX_CAP_NEXTPTR``) to the first forwarded byte: the Vivado GUI has no setting for it, and
without it the forwarded virtio capabilities exist but no capability walk reaches them
(pcileech-fpga issue #159 edits the same generated parameters). The patch is checked: the script
stops if it finds nothing to patch.
"""

from ..adapters.xilinx7_core import EXT_CFG_CAP_PTR_MIN, HARD_IP_CAPABILITIES

__all__ = ["ip_config", "ip_tcl", "bar_scale_size", "constraints", "after_synth_tcl",
           "program_jtag_tcl", "program_flash_tcl", "MIN_MEMORY_BAR", "MIN_IO_BAR"]

_CAP = {c.name: c for c in HARD_IP_CAPABILITIES}


#: Smallest BARs the ``pcie_7x`` IP offers: memory 128 bytes, I/O 16 bytes (PG054, "Base Address
#: Registers").
MIN_MEMORY_BAR, MIN_IO_BAR = 128, 16


def bar_scale_size(size, *, io=False):
    """``(BarN_Scale, BarN_Size)`` for a BAR of ``size`` bytes (a power of two, at least 128
    bytes for memory, 16 for I/O). A smaller I/O structure gets a 16-byte BAR: the function
    decodes its own length inside it."""
    minimum = MIN_IO_BAR if io else MIN_MEMORY_BAR
    if not isinstance(size, int) or size <= 0 or size & (size - 1):
        raise ValueError(f"a BAR size must be a power of two, not {size!r}")
    if io:
        size = max(size, minimum)
    elif size < minimum:
        raise ValueError(f"a memory BAR must be at least {minimum} bytes, not {size!r}")
    for scale, unit in (("Gigabytes", 1 << 30), ("Megabytes", 1 << 20), ("Kilobytes", 1 << 10)):
        if size >= unit:
            return scale, size // unit
    return "Bytes", size


def ip_config(plan, link, *, block="X0Y0"):
    """The ``CONFIG.*`` properties (without the prefix), in the order they are set."""
    forwarding = plan.get("config_forwarding")
    if forwarding is None:
        raise ValueError("the plan has no config_forwarding: build the function in 'ext' mode")
    dword = forwarding["ext_cfg_cap_ptr_dword"]
    if not EXT_CFG_CAP_PTR_MIN <= dword <= 0x3F:
        raise ValueError(f"the 7-series core forwards from dword {EXT_CFG_CAP_PTR_MIN:#x} "
                         f"(byte 0xa8) up; the plan asks for dword {dword:#x}")
    class_code = plan["class_code"]
    mps = plan["pcie"]["max_payload_size_supported"]
    config = {
        "mode_selection": "Advanced",
        "Device_Port_Type": "PCI_Express_Endpoint_device",
        "PCIe_Blk_Locn": block,
        "Link_Speed": link.link_speed,
        "Trgt_Link_Speed": f"4'h{link.gen}",
        "Maximum_Link_Width": f"X{link.lanes}",
        "Interface_Width": f"{link.data_width}_bit",
        "User_Clk_Freq": f"{link.user_clock_mhz:g}",
        "Ref_Clk_Freq": "100_MHz",
        "Vendor_ID": f"{plan['vendor_id']:04X}",
        "Device_ID": f"{plan['device_id']:04X}",
        "Revision_ID": f"{plan['revision_id']:02X}",
        "Subsystem_Vendor_ID": f"{plan['subsystem_vendor_id']:04X}",
        "Subsystem_ID": f"{plan['subsystem_id']:04X}",
        "Use_Class_Code_Lookup_Assistant": "false",
        "Class_Code_Base": f"{class_code >> 16:02X}",
        "Class_Code_Sub": f"{(class_code >> 8) & 0xFF:02X}",
        "Class_Code_Interface": f"{class_code & 0xFF:02X}",
        "Max_Payload_Size": f"{mps}_bytes",
        "Extended_Tag_Field": "true" if plan["pcie"]["extended_tag"] else "false",
        "Legacy_Interrupt": plan["interrupt_pin"] if plan["interrupt_pin"] else "NONE",
        "IntX_Generation": "true" if plan["interrupt_pin"] else "false",
        # MSI is never used by virtio_pci; its capability stays out of the chain.
        "MSI_Enabled": "false",
        "DSN_Enabled": "false",
        # Configuration accesses from byte 0xA8 (legacy space) go to the function.
        "PCI_CFG_Space": "true",
        "PCI_CFG_Space_Addr": f"{dword:02X}",
        "EXT_PCI_CFG_Space": "false",
        # The core strips ECRC digests before the user interface (the adapter expects none).
        "RECRC_Check_Trim": "true",
        "Buf_Opt_BMA": "true",
        "Trans_Buf_Pipeline": "None",
        "en_ext_clk": "false",
        "shared_logic_in_core": "false",
        "cfg_fc_if": "false",
        "err_reporting_if": "false",
        "rcv_msg_if": "false",
        "pl_interface": "true",
        "cfg_mgmt_if": "true",
        "cfg_ctl_if": "true",
        "cfg_status_if": "true",
    }
    for index in range(6):
        config[f"Bar{index}_Enabled"] = "false"
    for bar in plan["bars"]:
        i = bar["index"]
        scale, size = bar_scale_size(bar["size"], io=bar["kind"] == "io")
        config.update({
            f"Bar{i}_Enabled": "true",
            f"Bar{i}_Type": "IO" if bar["kind"] == "io" else "Memory",
            f"Bar{i}_64bit": "true" if bar["64bit"] else "false",
            f"Bar{i}_Prefetchable": "true" if bar["prefetchable"] else "false",
            f"Bar{i}_Scale": scale,
            f"Bar{i}_Size": str(size),
        })
        if bar["64bit"]:
            config.pop(f"Bar{i + 1}_Enabled", None)     # the upper half of the pair
    msix = plan.get("msix")
    if msix:
        config.update({
            "MSIx_Enabled": "true",
            "MSIx_Table_Size": f"{msix['table_size']:X}",
            "MSIx_Table_Offset": f"{msix['table_offset']:X}",
            "MSIx_Table_BIR": f"BAR_{msix['table_bir']}",
            "MSIx_PBA_Offset": f"{msix['pba_offset']:X}",
            "MSIx_PBA_BIR": f"BAR_{msix['pba_bir']}",
        })
    else:
        config["MSIx_Enabled"] = "false"
    return config


def last_capability(plan):
    """Name of the core's last capability (its next pointer is patched)."""
    return "msix" if plan.get("msix") else "pcie"


def ip_tcl(plan, link, *, module="pcie_7x_0", block="X0Y0"):
    """The TCL that creates, configures, generates and patches the ``pcie_7x`` IP."""
    config = ip_config(plan, link, block=block)
    first = plan["config_forwarding"]["first_forwarded_offset"]
    last = last_capability(plan)
    param = "MSIX_CAP_NEXTPTR" if last == "msix" else "PCIE_CAP_NEXTPTR"
    props = " \\\n    ".join(f"CONFIG.{k} {{{v}}}" for k, v in config.items())
    return f"""\
# Generated by virtio-pcie: the Xilinx 7-series PCIe hard IP for this build.
# {link.name}, {link.data_width}-bit AXI4-Stream at {link.user_clock_mhz:g} MHz.
# Configuration requests from byte 0x{first:02X} up are forwarded to the virtio function.

create_ip -vendor xilinx.com -library ip -name pcie_7x -module_name {module} -dir ./ip
set_property -dict [list \\
    {props} \\
] [get_ips {module}]

# Synthesised with the design (its sources are patched below, so no out-of-context checkpoint).
set_property generate_synth_checkpoint false [get_files {module}.xci]
generate_target all [get_ips {module}]

# The core's last capability ({last.upper()} at 0x{_CAP[last].offset:02X})
# must point at the first forwarded byte, where the virtio capabilities start. No CONFIG property
# sets it: patch {param} in the generated sources.
set patched 0
foreach f [get_files -of_objects [get_files {module}.xci] -filter {{FILE_TYPE == Verilog}}] {{
    set fh [open $f r]
    set text [read $fh]
    close $fh
    set n [regsub -all {{({param}\\s*[=(]\\s*)8'h[0-9A-Fa-f]+}} $text "\\\\18'h{first:02X}" text]
    if {{$n > 0}} {{
        set fh [open $f w]
        puts -nonewline $fh $text
        close $fh
        incr patched $n
        puts "virtio-pcie: {param} = 8'h{first:02X} in $f"
    }}
}}
if {{$patched == 0}} {{
    error "virtio-pcie: {param} not found in the generated {module} sources"
}}
"""


def constraints(top_ports):
    """Extra XDC: the reference clock and PERST# timing."""
    refclk, perst = top_ports["refclk_p"], top_ports["perst"]
    return f"""\
# Generated by virtio-pcie.
# 100 MHz PCIe reference clock (PCIe CEM); the core derives user_clk_out from it.
create_clock -period 10.000 -name pcie_refclk [get_ports {{{refclk}}}]
# PERST# is asynchronous to everything.
set_false_path -from [get_ports {{{perst}}}]
"""


def after_synth_tcl(board):
    """Before placement: let the lanes' package pins (from the board definition) place the GT
    channels, instead of the IP's default placement (which assumes a lane order some boards do
    not have; LitePCIe does the same)."""
    gt = "gtp" if board.platform.device.startswith("xc7a") else "gtx"
    return (f"reset_property LOC [get_cells -quiet -hierarchical -filter "
            f"{{NAME =~ *pipe_lane[*].gt_wrapper_i/{gt}_channel.{gt}e2_channel_i}}]")


def program_jtag_tcl(name, part):
    """Vivado hardware-manager script: load ``<name>.bit`` into the FPGA over JTAG (lost at
    power-off; the host must rescan its PCI bus afterwards)."""
    return f"""\
# Generated by virtio-pcie: vivado -mode batch -source program_jtag.tcl
open_hw_manager
connect_hw_server
open_hw_target
current_hw_device [lindex [get_hw_devices {part}*] 0]
set_property PROGRAM.FILE {{{name}.bit}} [current_hw_device]
program_hw_devices
close_hw_manager
"""


def program_flash_tcl(name, part, flash_part):
    """Vivado hardware-manager script: write ``<name>.bin`` to the board's configuration flash
    ``flash_part`` (the FPGA then configures itself at every power-up, in time for the host's
    enumeration)."""
    return f"""\
# Generated by virtio-pcie: vivado -mode batch -source program_flash.tcl, then power-cycle the
# host (Vivado cannot reconfigure the FPGA from the flash by itself).
open_hw_manager
connect_hw_server
open_hw_target
current_hw_device [lindex [get_hw_devices {part}*] 0]
create_hw_cfgmem -hw_device [current_hw_device] {flash_part}
set_property PROGRAM.FILES {{{name}.bin}} [current_hw_cfgmem]
set_property PROGRAM.ADDRESS_RANGE {{use_file}} [current_hw_cfgmem]
set_property PROGRAM.BLANK_CHECK 0 [current_hw_cfgmem]
set_property PROGRAM.ERASE 1 [current_hw_cfgmem]
set_property PROGRAM.CFG_PROGRAM 1 [current_hw_cfgmem]
set_property PROGRAM.VERIFY 1 [current_hw_cfgmem]
create_hw_bitstream -hw_device [current_hw_device] \\
    [get_property PROGRAM.HW_CFGMEM_BITFILE [current_hw_device]]
program_hw_devices
program_hw_cfgmem
close_hw_manager
"""
