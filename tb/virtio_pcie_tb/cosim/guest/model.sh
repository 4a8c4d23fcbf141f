#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Guest check for the "model" design (a Python endpoint behind TLP FIFOs, see
# virtio_pcie_tb/models/endpoint_model.py), with no driver: what Linux enumerated, then the BARs
# and the DMA path exercised from user space.
#   1. lspci -vv: a 32-bit, a 64-bit prefetchable and an I/O BAR of the model's sizes, MSI-X
#      with 4 vectors, a PCI Express capability;
#   2. Memory, I/O and Bus Master enabled (INTx disabled: no driver would handle it);
#   3. BAR0 registers with devmem (ID, scratch), BAR2 RAM with 8- to 64-bit accesses, BAR4 I/O
#      ports through /dev/port;
#   4. the model's DMA engine copies 256 bytes between two places of the memory kept from the
#      kernel (memmap=1M$0x10000000): the copy and the byte sum it reports are checked.

fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }
wbyte() { printf "\\$(printf %03o "$1")"; }
hex() { printf '0x%x' "$1"; }

dev=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor"):$(cat "$d/device")" = "0x1af4:0x10f0" ] && dev=$d
done
[ -n "$dev" ] || fail "no 1af4:10f0 device"
slot=${dev##*/}

step "lspci -vv -s $slot"
lspci -vv -s "$slot" > /tmp/lspci.txt 2>/dev/null
cat /tmp/lspci.txt
grep -q "Region 0: Memory at .* (32-bit, non-prefetchable) \[size=16K\]" /tmp/lspci.txt \
    || fail "BAR0"
grep -q "Region 2: Memory at .* (64-bit, prefetchable) \[size=16K\]" /tmp/lspci.txt \
    || fail "BAR2"
grep -q "Region 4: I/O ports at .* \[size=32\]" /tmp/lspci.txt || fail "BAR4"
grep -q "MSI-X: Enable- Count=4" /tmp/lspci.txt || fail "MSI-X capability"
grep -q "Express (v2) Endpoint" /tmp/lspci.txt || fail "PCI Express capability"

step "enable Memory, I/O and Bus Master; disable INTx"
echo 1 > "$dev/enable" || fail "enable"
cmd=$(od -An -tu2 -j4 -N2 "$dev/config" | tr -d ' ')
new=$(( (cmd | 0x7) | 0x400 ))
{ wbyte $((new & 255)); wbyte $((new >> 8)); } |
    dd of="$dev/config" bs=1 seek=4 count=2 conv=notrunc 2>/dev/null || fail "write Command"
got=$(od -An -tu2 -j4 -N2 "$dev/config" | tr -d ' ')
[ $((got & 0x407)) -eq $((0x407)) ] || fail "Command reads $(hex "$got")"

bar0=$(( $(sed -n 1p "$dev/resource" | cut -d' ' -f1) ))
bar2=$(( $(sed -n 3p "$dev/resource" | cut -d' ' -f1) ))
io=$(( $(sed -n 5p "$dev/resource" | cut -d' ' -f1) ))
echo "BAR0 $(hex $bar0), BAR2 $(hex $bar2), I/O $(hex $io)"

step "BAR0 registers"
id=$(devmem $bar0 32)
[ $((id)) -eq $((0xC05117E5)) ] || fail "ID register reads $id"
devmem $((bar0 + 4)) 32 0x5a5aa5a5
[ $(( $(devmem $((bar0 + 4)) 32) )) -eq $((0x5a5aa5a5)) ] || fail "scratch register"
[ $(( $(devmem $((bar0 + 5)) 8) )) -eq $((0xa5)) ] || fail "byte read of the scratch register"

step "BAR2 memory, 8 to 64 bits"
devmem $((bar2 + 0x100)) 64 0x0123456789abcdef
[ "$(devmem $((bar2 + 0x100)) 64)" = "0x0123456789ABCDEF" ] || fail "64-bit access"
devmem $((bar2 + 0x107)) 8 0x42                  # the top byte of 0x01234567
[ $(( $(devmem $((bar2 + 0x104)) 32) )) -eq $((0x42234567)) ] || fail "8-bit write"
devmem $((bar2 + 0x3ffe)) 16 0xbeef
[ $(( $(devmem $((bar2 + 0x3ffe)) 16) )) -eq $((0xbeef)) ] || fail "16-bit access at the end"

step "BAR4 I/O ports"
wbyte 0x5a | dd of=/dev/port bs=1 seek=$((io + 3)) count=1 conv=notrunc 2>/dev/null
val=$(dd if=/dev/port bs=1 skip=$((io + 3)) count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
[ "$val" = "90" ] || fail "I/O port read $val"

step "DMA: 256 bytes copied by the device in guest memory"
src=$((0x10000000)); dst=$((0x10000800))
sum=0
i=0
while [ $i -lt 64 ]; do
    w=$(( (i * 0x01010101 + 0x10203040) & 0xffffffff ))
    devmem $((src + 4 * i)) 32 $w
    devmem $((dst + 4 * i)) 32 0
    sum=$(( sum + (w & 255) + (w >> 8 & 255) + (w >> 16 & 255) + (w >> 24 & 255) ))
    i=$((i + 1))
done
devmem $((bar0 + 0x08)) 32 $src
devmem $((bar0 + 0x0c)) 32 0
devmem $((bar0 + 0x14)) 32 $dst
devmem $((bar0 + 0x18)) 32 0
devmem $((bar0 + 0x10)) 32 256
devmem $((bar0 + 0x1c)) 32 1
tries=0
until [ $(( $(devmem $((bar0 + 0x20)) 32) )) -eq 1 ]; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || fail "the DMA did not finish"
done
[ $(( $(devmem $((bar0 + 0x30)) 32) )) -eq 0 ] || fail "the device counted DMA errors"
i=0
while [ $i -lt 64 ]; do
    w=$(( (i * 0x01010101 + 0x10203040) & 0xffffffff ))
    [ $(( $(devmem $((dst + 4 * i)) 32) )) -eq $w ] || fail "DMA copy differs at word $i"
    i=$((i + 1))
done
[ $(( $(devmem $((bar0 + 0x24)) 32) )) -eq $sum ] || fail "checksum"
echo "256 bytes copied by DMA, byte sum $sum"
echo "PASS: BARs and DMA of the model endpoint work from the guest"
