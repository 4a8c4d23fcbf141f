#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Guest check for a design that is not a virtio device yet (the minimal endpoint): the PCI
# function the simulation enumerated over TLPs is on the guest's bus with the same IDs.
# EXPECT_PCI_ID (vendor:device, from the RTL's configuration space) is set by the host.

fail() { echo "FAIL: $*"; exit 1; }

echo "== lspci -nn"
lspci -nn > /tmp/lspci.txt 2>/dev/null || fail "lspci failed"
cat /tmp/lspci.txt
[ -n "$EXPECT_PCI_ID" ] || fail "EXPECT_PCI_ID is not set"
grep -q "\[$EXPECT_PCI_ID\]" /tmp/lspci.txt || fail "no device [$EXPECT_PCI_ID] in lspci -nn"
echo "== lspci -vv -d $EXPECT_PCI_ID"
lspci -vv -d "$EXPECT_PCI_ID" 2>/dev/null
echo "== configuration space as the guest reads it"
lspci -xxx -d "$EXPECT_PCI_ID" 2>/dev/null
echo "PASS: the guest sees [$EXPECT_PCI_ID]"
