# SPDX-License-Identifier: BSD-2-Clause
"""TLPs as the testbench sees them, and their encoding as TLP-stream beats.

:class:`RawTlp` is a TLP in the project's representation (a 128-bit header as laid out by
:data:`virtio_pcie.spec.pcie.TlpHeader`, payload bytes, BAR id). It converts to and from
cocotbext-pcie :class:`~cocotbext.pcie.core.tlp.Tlp` objects through wire bytes, so the two
encodings check each other. :class:`BeatCodec` packs a :class:`RawTlp` into the beat integers of a
:func:`virtio_pcie.tlp.signature.TlpBeat` stream and back, with the bit offsets taken from that
layout. Nothing here touches a simulator.
"""

import struct

from amaranth.lib import data

from virtio_pcie.spec.pcie import (FmtType, TlpHeader, TlpDw0, CplStatus, MsgCode)
from virtio_pcie.tlp.signature import TlpBeat

__all__ = ["MalformedTlp", "RawTlp", "BeatCodec", "fmt_type_name", "status_completion"]

_FMT_TYPES = {m.value: m for m in FmtType}


def fmt_type_name(value):
    member = _FMT_TYPES.get(value)
    return member.name if member is not None else f"0x{value:02x}"


class MalformedTlp(ValueError):
    """A TLP that violates the TLP-stream rules or the PCIe header rules."""


def _field(layout, path):
    """(bit offset, width) of a dotted field path in a layout."""
    offset = 0
    shape = layout
    for part in path.split("."):
        fld = shape[part]
        offset += fld.offset
        shape = fld.shape
    width = fld.width
    return offset, width


class _Fields:
    """Bit-slice accessors for the header layouts (computed once from spec/)."""

    def __init__(self, layout):
        self._layout = layout
        self._cache = {}

    def get(self, value, path):
        off, width = self._cache.get(path) or self._cache.setdefault(path,
                                                                       _field(self._layout, path))
        return (value >> off) & ((1 << width) - 1)

    def set(self, value, path, field_value):
        off, width = self._cache.get(path) or self._cache.setdefault(path,
                                                                       _field(self._layout, path))
        mask = ((1 << width) - 1) << off
        return (value & ~mask) | ((int(field_value) << off) & mask)


HDR = _Fields(TlpHeader)
_DW0 = _Fields(TlpDw0)


class RawTlp:
    """A TLP: ``hdr`` (128-bit int), ``payload`` (bytes, a multiple of 4), ``bar_id``,
    ``error`` (stream error flags)."""

    __slots__ = ("hdr", "payload", "bar_id", "error", "func_num", "meta")

    def __init__(self, hdr=0, payload=b"", *, bar_id=0, error=0, func_num=0):
        self.hdr      = hdr
        self.payload  = bytes(payload)
        self.bar_id   = bar_id
        self.error    = error
        self.func_num = func_num
        self.meta     = {}

    # -- header fields ---------------------------------------------------------------------
    def __getitem__(self, path):
        return HDR.get(self.hdr, path)

    def __setitem__(self, path, value):
        self.hdr = HDR.set(self.hdr, path, value)

    @property
    def fmt_type(self):
        return self["dw0.fmt_type"]

    @property
    def fmt_type_name(self):
        return fmt_type_name(self.fmt_type)

    @property
    def length_dw(self):
        """Payload length in dwords from the header (0 encodes 1024)."""
        return self["dw0.length"] or 1024

    @property
    def has_data(self):
        return bool(FmtType.has_data(self.fmt_type))

    @property
    def is_4dw(self):
        return bool(FmtType.is_4dw(self.fmt_type))

    @property
    def header_dwords(self):
        return 4 if self.is_4dw else 3

    @property
    def is_completion(self):
        return self.fmt_type in (FmtType.CPL.value, FmtType.CPLD.value, FmtType.CPLLK.value,
                                 FmtType.CPLDLK.value)

    @property
    def is_message(self):
        return (self.fmt_type & 0x18) == 0x10

    @property
    def address(self):
        """Request address (memory/IO), from DW2 or DW2:DW3."""
        if self.is_4dw:
            return (self["req.dw2"] << 32) | (self["req.dw3"] & ~3)
        return self["req.dw2"] & ~3

    @property
    def tag(self):
        if self.is_completion:
            return self["cpl.tag"] | (self["dw0.t8"] << 8) | (self["dw0.t9"] << 9)
        return self["req.tag"] | (self["dw0.t8"] << 8) | (self["dw0.t9"] << 9)

    def check(self):
        """Raise :class:`MalformedTlp` if header and payload disagree or the type is unknown."""
        if self.fmt_type not in _FMT_TYPES:
            raise MalformedTlp(f"unknown Fmt/Type 0x{self.fmt_type:02x} in TLP {self!r}")
        if len(self.payload) % 4:
            raise MalformedTlp(f"payload of {len(self.payload)} bytes is not whole dwords: "
                               f"{self!r}")
        if self.has_data:
            if len(self.payload) != 4 * self.length_dw:
                raise MalformedTlp(f"{self.fmt_type_name} says {self.length_dw} dwords but "
                                   f"carries {len(self.payload) // 4}: {self!r}")
        elif self.payload:
            raise MalformedTlp(f"{self.fmt_type_name} has no data but carries "
                               f"{len(self.payload)} bytes: {self!r}")
        if not self.is_4dw and (self.hdr >> 96):
            raise MalformedTlp(f"3-DW header {self.fmt_type_name} has a non-zero DW3: {self!r}")
        return self

    # -- wire bytes / cocotbext-pcie -------------------------------------------------------
    def pack(self):
        """Wire bytes: header dwords big-endian, then the payload."""
        words = [(self.hdr >> (32 * i)) & 0xFFFFFFFF for i in range(self.header_dwords)]
        return struct.pack(f">{len(words)}L", *words) + self.payload

    @classmethod
    def unpack(cls, wire, **kwargs):
        wire = bytes(wire)
        if len(wire) < 12:
            raise MalformedTlp(f"{len(wire)} bytes is shorter than any TLP header")
        dw0, = struct.unpack_from(">L", wire, 0)
        n = 4 if FmtType.is_4dw(dw0 >> 24) else 3
        if len(wire) < 4 * n:
            raise MalformedTlp(f"truncated {n}-DW header ({len(wire)} bytes)")
        words = struct.unpack_from(f">{n}L", wire, 0)
        hdr = 0
        for i, w in enumerate(words):
            hdr |= w << (32 * i)
        return cls(hdr, wire[4 * n:], **kwargs)

    def to_cocotbext(self):
        from cocotbext.pcie.core.tlp import Tlp
        return Tlp.unpack(bytearray(self.pack()))

    @classmethod
    def from_cocotbext(cls, tlp, **kwargs):
        return cls.unpack(bytes(tlp.pack()), **kwargs)

    # -- constructors used by tests and models --------------------------------------------
    @classmethod
    def message(cls, code, requester_id, fmt_type=FmtType.MSG_LOC):
        t = cls()
        t["dw0.fmt_type"] = fmt_type.value
        t["msg.message_code"] = MsgCode(code).value if not isinstance(code, int) else code
        t["msg.requester_id"] = requester_id
        return t

    def __repr__(self):
        parts = [self.fmt_type_name]
        if self.is_completion:
            parts.append(f"status={CplStatus(self['cpl.status']).name}"
                         if self["cpl.status"] in (0, 1, 2, 4) else f"status={self['cpl.status']}")
            parts.append(f"tag={self.tag} bc={self['cpl.byte_count']} "
                         f"la=0x{self['cpl.lower_address']:02x}")
        elif self.is_message:
            parts.append(f"code=0x{self['msg.message_code']:02x}")
        elif self.fmt_type in (FmtType.CFGRD0.value, FmtType.CFGWR0.value):
            reg = (self["cfg.ext_register"] << 6) | self["cfg.register"]
            parts.append(f"reg=0x{4 * reg:03x} be={self['cfg.first_be']:x} tag={self.tag}")
        else:
            parts.append(f"addr=0x{self.address:x} be={self['req.first_be']:x}/"
                         f"{self['req.last_be']:x} tag={self.tag}")
        parts.append(f"len={self['dw0.length']}")
        if self.payload:
            shown = self.payload[:16].hex()
            parts.append(f"data={shown}{'…' if len(self.payload) > 16 else ''}")
        return f"RawTlp({' '.join(parts)})"


def status_completion(cpl, status):
    """The completion without data a completer would send instead of ``cpl`` when the request
    ended with ``status`` (UR, CA, CRS): ``cpl``'s IDs and tag, Byte Count 4 (PCIe Base 4.0
    §2.2.9: a Cpl with a status other than SC reports Byte Count as if it were the last)."""
    out = RawTlp(cpl.hdr)
    out["dw0.fmt_type"] = FmtType.CPL.value
    out["dw0.length"] = 0
    out["cpl.status"] = status.value
    out["cpl.byte_count"] = 4
    return out


class BeatCodec:
    """Packs :class:`RawTlp` objects into TLP-stream beat integers and back.

    Bit offsets come from :func:`~virtio_pcie.tlp.signature.TlpBeat`, so the codec follows any
    change of the layout.
    """

    def __init__(self, data_width):
        self.data_width = data_width
        self.lanes = data_width // 32
        self.bytes_per_beat = data_width // 8
        layout = TlpBeat(data_width)
        self.layout = layout
        self.width = data.Layout.cast(layout).size
        self.off = {name: layout[name].offset for name in
                    ("hdr", "data", "keep", "sop", "eop", "bar_id", "func_num", "error")}
        self._data_mask = (1 << data_width) - 1
        self._keep_mask = (1 << self.lanes) - 1

    def encode(self, tlp):
        """List of beat integers for ``tlp``."""
        payload = tlp.payload
        nbeats = max(1, -(-len(payload) // self.bytes_per_beat))
        beats = []
        o = self.off
        for i in range(nbeats):
            chunk = payload[i * self.bytes_per_beat:(i + 1) * self.bytes_per_beat]
            value = int.from_bytes(chunk, "little") << o["data"]
            value |= ((1 << (len(chunk) // 4)) - 1) << o["keep"]
            if i == 0:
                value |= (tlp.hdr << o["hdr"]) | (1 << o["sop"])
            if i == nbeats - 1:
                value |= (1 << o["eop"]) | (tlp.error << o["error"])
            value |= (tlp.bar_id << o["bar_id"]) | (tlp.func_num << o["func_num"])
            beats.append(value)
        return beats

    def field(self, beat, name, width):
        return (beat >> self.off[name]) & ((1 << width) - 1)

    def beat_fields(self, beat):
        o = self.off
        return {
            "hdr":      (beat >> o["hdr"]) & ((1 << 128) - 1),
            "data":     (beat >> o["data"]) & self._data_mask,
            "keep":     (beat >> o["keep"]) & self._keep_mask,
            "sop":      (beat >> o["sop"]) & 1,
            "eop":      (beat >> o["eop"]) & 1,
            "bar_id":   (beat >> o["bar_id"]) & 7,
            "func_num": (beat >> o["func_num"]) & 0xFF,
            "error":    (beat >> o["error"]) & 0xF,
        }


class BeatAssembler:
    """Rebuilds :class:`RawTlp` objects from beats, checking the beat rules.

    :meth:`push` returns a finished TLP on its ``eop`` beat, ``None`` otherwise, and raises
    :class:`MalformedTlp` with a description when the beats break the stream rules.
    """

    def __init__(self, codec, name="stream"):
        self.codec = codec
        self.name = name
        self._hdr = None
        self._chunks = []
        self._beat_count = 0
        self._bar_id = 0
        self._func_num = 0

    def push(self, beat):
        f = self.codec.beat_fields(beat)
        lanes = self.codec.lanes
        if f["sop"]:
            if self._hdr is not None:
                raise MalformedTlp(f"{self.name}: sop in the middle of a TLP "
                                   f"(after {self._beat_count} beats)")
            self._hdr = f["hdr"]
            self._chunks = []
            self._beat_count = 0
            self._bar_id = f["bar_id"]
            self._func_num = f["func_num"]
        elif self._hdr is None:
            raise MalformedTlp(f"{self.name}: beat without sop outside a TLP")
        keep = f["keep"]
        n = 0
        while n < lanes and (keep >> n) & 1:
            n += 1
        if keep != (1 << n) - 1:
            raise MalformedTlp(f"{self.name}: keep 0b{keep:0{lanes}b} is not contiguous from "
                               f"lane 0")
        if not f["eop"] and n != lanes:
            raise MalformedTlp(f"{self.name}: beat {self._beat_count} is not the last but "
                               f"only {n} of {lanes} lanes are valid")
        self._chunks.append(f["data"].to_bytes(self.codec.bytes_per_beat, "little")[:4 * n])
        self._beat_count += 1
        if not f["eop"]:
            return None
        tlp = RawTlp(self._hdr, b"".join(self._chunks), bar_id=self._bar_id,
                     error=f["error"], func_num=self._func_num)
        self._hdr = None
        nbeats = max(1, -(-len(tlp.payload) // self.codec.bytes_per_beat))
        if nbeats != self._beat_count:
            raise MalformedTlp(f"{self.name}: {self._beat_count} beats for "
                               f"{len(tlp.payload)} payload bytes")
        tlp.check()
        return tlp
