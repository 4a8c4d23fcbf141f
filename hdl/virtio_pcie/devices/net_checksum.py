# SPDX-License-Identifier: BSD-2-Clause
"""Beat-parallel pieces of the Internet checksum (RFC 1071) and of header parsing.

The network paths never loop over bytes: a frame streams one beat per cycle and each beat
contributes a masked sum of all its lanes at once. These functions build that logic.

The ones' complement sum of 16-bit big-endian words is independent of where the words start as
long as each byte keeps its parity: a byte at an even offset from the start of the summed region
is a high byte, one at an odd offset a low byte (RFC 1071 §2(B), byte order independence). The
frame's beats start at even offsets, so lanes ``0, 2, 4, …`` are high bytes for a region that
starts at an even offset; a region starting at an odd offset gives the byte-swapped sum.
"""

from amaranth.hdl import Cat, Const, Mux, Signal, Value

__all__ = ["named", "widen_signed", "lane_range", "masked_word_sum", "masked_word_xor",
           "fold_ones_complement", "swap_bytes", "tree_add", "lane_bytes"]


def lane_bytes(data, lanes):
    """The bytes of a beat, lane 0 first."""
    return [data[8 * j:8 * j + 8] for j in range(lanes)]


def widen_signed(value):
    """``value`` as a signed value of one more bit (unsigned values stay non-negative)."""
    value = Value.cast(value)
    if value.shape().signed:
        return value
    return Cat(value, Const(0, 1)).as_signed()


def named(m, value, name):
    """``value`` computed once, in a signal (Amaranth copies an expression at every use)."""
    value = Value.cast(value)
    signal = Signal(value.shape(), name=name)
    m.d.comb += signal.eq(value)
    return signal


def lane_range(m, beat_offset, lo, hi, lanes, name="lanes"):
    """A signal of ``lanes`` bits; bit ``j`` is set when ``lo <= beat_offset + j < hi``.

    ``beat_offset`` is the frame offset of lane 0; ``lo`` and ``hi`` are byte offsets (values or
    integers). Two subtractions, then comparisons against constants.
    """
    base = widen_signed(beat_offset)
    rel_lo = named(m, widen_signed(lo) - base, f"{name}_lo")
    rel_hi = named(m, widen_signed(hi) - base, f"{name}_hi")
    return named(m, Cat(*[(rel_lo <= j) & (rel_hi > j) for j in range(lanes)]), name)


def tree_add(values):
    """Sum of a list of values as a balanced adder tree."""
    values = [Value.cast(v) for v in values]
    if not values:
        return Const(0, 1)
    while len(values) > 1:
        paired = []
        for i in range(0, len(values) - 1, 2):
            paired.append(values[i] + values[i + 1])
        if len(values) % 2:
            paired.append(values[-1])
        values = paired
    return values[0]


def masked_word_sum(data, mask, lanes):
    """Sum of the bytes selected by ``mask``, even lanes weighted 256 (high bytes)."""
    octets = lane_bytes(data, lanes)
    high = tree_add([Mux(mask[j], octets[j], 0) for j in range(0, lanes, 2)])
    low = tree_add([Mux(mask[j], octets[j], 0) for j in range(1, lanes, 2)])
    return (high << 8) + low


def masked_word_xor(data, mask, lanes):
    """XOR of the 16-bit big-endian words at even lanes whose (even) lane is selected."""
    octets = lane_bytes(data, lanes)
    result = Const(0, 16)
    for j in range(0, lanes, 2):
        result = result ^ Mux(mask[j], Cat(octets[j + 1], octets[j]), 0)
    return result


def fold_ones_complement(value):
    """Fold an unsigned sum into a 16-bit ones' complement sum (end-around carries, RFC 1071
    §4.1): add the high part to the low 16 bits until the result fits 16 bits."""
    value = Value.cast(value).as_unsigned()
    bound = (1 << value.shape().width) - 1          # largest value the expression can take
    while bound > 0xFFFF:
        value = value[:16] + value[16:]
        high = bound >> 16                          # the tight bound of the folded value
        bound = max(high + (bound & 0xFFFF), high - 1 + 0xFFFF)
        value = value[:bound.bit_length()]
    if value.shape().width >= 16:
        return value[:16]
    return Cat(value, Const(0, 16 - value.shape().width))


def swap_bytes(value16):
    return Cat(value16[8:16], value16[0:8])
