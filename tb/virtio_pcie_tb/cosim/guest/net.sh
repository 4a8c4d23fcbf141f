#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Default guest check for virtio-net (busybox sh, run by /init with NET_IF, GUEST_IP, PEER_IP
# and PEER_MAC set; the peer is the testbench's, on the MAC side of the device):
#   1. lspci -k shows the device bound to virtio-pci;
#   2. ARP: the first ping resolves PEER_IP to PEER_MAC;
#   3. ICMP echo of every payload size from 0 to MTU - 28 (the whole MTU), each reply's payload
#      compared with the request (echo_check icmp);
#   4. a UDP echo bulk transfer, every byte verified (echo_check udp).
# Tunables (environment): UDP_BYTES (1048576), UDP_DATAGRAM (1024).

fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }

step "lspci -k"
lspci -nnk > /tmp/lspci.txt 2>/dev/null || fail "lspci failed"
cat /tmp/lspci.txt
grep -q "Kernel driver in use: virtio-pci" /tmp/lspci.txt || fail "no device bound to virtio-pci"
[ -n "$NET_IF" ] || fail "no virtio network interface (NET_IF is empty)"
[ -n "$GUEST_IP" ] && [ -n "$PEER_IP" ] && [ -n "$PEER_MAC" ] || fail "GUEST_IP/PEER_IP/PEER_MAC unset"
ip link set lo up
ip link set "$NET_IF" up || fail "ip link set $NET_IF up"
ip addr add "$GUEST_IP/24" dev "$NET_IF" || fail "ip addr add"
mtu=$(cat "/sys/class/net/$NET_IF/mtu")
echo "$NET_IF: $(cat "/sys/class/net/$NET_IF/address"), MTU $mtu, $GUEST_IP -> peer $PEER_IP"

step "ARP"
tries=0
until ping -c 1 -W 5 "$PEER_IP" > /dev/null 2>&1; do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || fail "no answer from $PEER_IP"
done
mac=$(ip neigh show "$PEER_IP" | sed -n 's/.* lladdr \([0-9a-f:]*\).*/\1/p')
[ "$mac" = "$PEER_MAC" ] || fail "ARP resolved $PEER_IP to '$mac', not $PEER_MAC"
echo "$PEER_IP is at $mac"

max=$((mtu - 28))
step "ICMP echo of every size from 0 to $max bytes, payloads compared"
echo_check icmp "$PEER_IP" 0 "$max" || fail "ICMP echo"

step "UDP echo bulk transfer"
echo_check udp "$PEER_IP" 7 "${UDP_BYTES:-1048576}" "${UDP_DATAGRAM:-1024}" || fail "UDP echo"

for s in rx_packets tx_packets rx_bytes tx_bytes rx_errors tx_errors rx_dropped; do
    printf '%s=%s ' "$s" "$(cat "/sys/class/net/$NET_IF/statistics/$s")"
done
echo
echo "PASS: virtio-net ARP, ICMP echo up to the MTU and UDP echo verified on $NET_IF"
