#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Default guest check for virtio-blk (busybox sh, run by /init with BLK_DEV set):
#   1. lspci -k shows the device bound to virtio-pci;
#   2. a random pattern written with dd at two places (1 MiB in, and the last blocks) reads
#      back identical after the page cache is dropped;
#   3. for each file system in FS_TYPES (default "ext2 vfat"): mkfs, mount, copy files,
#      unmount, drop caches, mount again and verify every file's checksum.
# Tunables (environment): PATTERN_KB (1024), FS_TYPES ("ext2 vfat").

fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

step "lspci -k"
lspci -nnk > /tmp/lspci.txt 2>/dev/null || fail "lspci failed"
cat /tmp/lspci.txt
grep -q "Kernel driver in use: virtio-pci" /tmp/lspci.txt || fail "no device bound to virtio-pci"
[ -n "$BLK_DEV" ] && [ -b "$BLK_DEV" ] || fail "no virtio block device (BLK_DEV='$BLK_DEV')"
name=${BLK_DEV#/dev/}
sectors=$(cat "/sys/block/$name/size")
bytes=$((sectors * 512))
echo "$BLK_DEV: $sectors sectors of 512 bytes ($((bytes / 1048576)) MiB)"
[ "$bytes" -ge $((8 * 1048576)) ] || fail "the disk is smaller than 8 MiB"
# The feature bits Linux accepted (sysfs: one character per bit, bit 0 first).
for dev in /sys/bus/virtio/devices/*; do
    [ -d "$dev/block" ] && echo "negotiated features: $(cat "$dev/features")"
done

PATTERN_KB=${PATTERN_KB:-1024}
blocks=$((PATTERN_KB / 4))
step "raw I/O: $PATTERN_KB KiB pattern at block 256 and at the end, read back after dropping caches"
head -c $((PATTERN_KB * 1024)) /dev/urandom > /tmp/pattern
last=$((bytes / 4096 - blocks))
for at in 256 $last; do
    dd if=/tmp/pattern of="$BLK_DEV" bs=4096 seek="$at" conv=fsync 2>/dev/null \
        || fail "dd write at block $at"
done
drop_caches
for at in 256 $last; do
    dd if="$BLK_DEV" of=/tmp/readback bs=4096 skip="$at" count="$blocks" 2>/dev/null \
        || fail "dd read at block $at"
    cmp /tmp/pattern /tmp/readback || fail "data read back at block $at differs"
done
echo "pattern $(md5sum < /tmp/pattern | cut -d' ' -f1) read back intact at blocks 256 and $last"

for fs in ${FS_TYPES:-ext2 vfat}; do
    step "$fs: mkfs, mount, copy, unmount, remount, verify"
    case $fs in
        ext2) mke2fs -F "$BLK_DEV" > /tmp/mkfs.log 2>&1 || { cat /tmp/mkfs.log; fail "mke2fs"; } ;;
        vfat) mkdosfs "$BLK_DEV" > /tmp/mkfs.log 2>&1 || { cat /tmp/mkfs.log; fail "mkdosfs"; } ;;
        *) fail "unknown file system $fs" ;;
    esac
    mount -t "$fs" "$BLK_DEV" /mnt || fail "mount -t $fs"
    mkdir -p /mnt/dir/sub || fail "mkdir on $fs"
    cp /tmp/pattern /mnt/pattern.bin && cp /bin/busybox /mnt/dir/busybox &&
        cp /usr/share/misc/pci.ids /mnt/dir/sub/pci.ids || fail "copy to $fs"
    i=0
    while [ $i -lt 32 ]; do
        echo "small file $i on $fs" > "/mnt/dir/f$i.txt" || fail "write f$i.txt on $fs"
        i=$((i + 1))
    done
    (cd /mnt && find . -type f | sort | xargs md5sum) > /tmp/sums || fail "checksums on $fs"
    files=$(wc -l < /tmp/sums)
    df -k /mnt | tail -1
    umount /mnt || fail "umount $fs"
    drop_caches
    mount -t "$fs" "$BLK_DEV" /mnt || fail "second mount -t $fs"
    (cd /mnt && md5sum -c /tmp/sums > /tmp/check.log 2>&1) || { cat /tmp/check.log; fail "checksums differ after remounting $fs"; }
    umount /mnt || fail "second umount $fs"
    echo "$fs: $files files verified after remount"
done
echo "PASS: virtio-blk raw I/O and file systems verified on $BLK_DEV"
