#!/usr/bin/env bash
# Builds an x86_64 Debian root filesystem with the edgefleet agent baked in, and writes it as a
# disk image (ext4, converted to qcow2 with qemu-img) plus the kernel and initrd to boot it with
# (`qemu-system-x86_64 -kernel ... -initrd ...`, see firmware-images/README.md).
#
#   firmware-images/debian/build.sh --agent target/release-edge/edgefleet-agent --out DIR \
#       [--provision DIR] [--suite bookworm] [--mirror URL] [--size 2G]
#
# --provision DIR holds the device's provisioning files, each optional: agent.toml, trust.json,
# ca.crt (to /etc/edgefleet/) and enroll-token (to /var/lib/edgefleet/). Needs root, debootstrap,
# e2fsprogs (mkfs.ext4 -d) and qemu-utils; packages come from the Debian mirror apt uses here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
common="$here/../common"
agent="" out="" provision="" suite="bookworm" size="2G"
mirror="$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
mirror="${mirror:-http://deb.debian.org/debian}"

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --agent) agent="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --provision) provision="$2"; shift 2 ;;
        --suite) suite="$2"; shift 2 ;;
        --mirror) mirror="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "build.sh: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$agent" ] && [ -n "$out" ] || usage
[ -x "$agent" ] || { echo "build.sh: $agent is not an executable" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "build.sh: debootstrap needs root" >&2; exit 2; }
for tool in debootstrap mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (apt-get install debootstrap e2fsprogs qemu-utils)" >&2; exit 2; }
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
rootfs="$out/rootfs"
rm -rf "$rootfs"
step() { printf '\n==> %s\n' "$*"; }

step "debootstrap $suite from $mirror"
packages=systemd,systemd-sysv,udev,dbus,linux-image-cloud-amd64,initramfs-tools,ca-certificates,iproute2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror"

step "agent, unit, user and network"
install -D -m 0755 "$agent" "$rootfs/usr/bin/edgefleet-agent"
install -D -m 0644 "$common/edgefleet-agent.service" "$rootfs/etc/systemd/system/edgefleet-agent.service"
install -D -m 0644 "$common/edgefleet-firstboot.service" "$rootfs/etc/systemd/system/edgefleet-firstboot.service"
install -D -m 0755 "$common/edgefleet-firstboot" "$rootfs/usr/libexec/edgefleet/firstboot"
install -D -m 0644 "$common/edgefleet.sysusers.conf" "$rootfs/usr/lib/sysusers.d/edgefleet.conf"
install -D -m 0644 "$common/80-dhcp.network" "$rootfs/etc/systemd/network/80-dhcp.network"
chroot "$rootfs" systemd-sysusers
chroot "$rootfs" systemctl enable edgefleet-agent.service edgefleet-firstboot.service systemd-networkd.service systemd-networkd-wait-online.service
echo "edgefleet-device" > "$rootfs/etc/hostname"
echo "/dev/vda / ext4 rw,relatime 0 1" > "$rootfs/etc/fstab"

step "provisioning"
install -d -m 0755 "$rootfs/etc/edgefleet"
install -m 0644 "$common/agent.toml.example" "$rootfs/etc/edgefleet/agent.toml.example"
install -d -m 0700 "$rootfs/var/lib/edgefleet"
if [ -n "$provision" ]; then
    for f in agent.toml trust.json ca.crt; do
        [ -f "$provision/$f" ] && install -m 0644 "$provision/$f" "$rootfs/etc/edgefleet/$f"
    done
    [ -f "$provision/enroll-token" ] && install -m 0600 "$provision/enroll-token" "$rootfs/var/lib/edgefleet/enroll-token"
fi
chroot "$rootfs" chown -R edgefleet:edgefleet /var/lib/edgefleet

step "kernel, initrd, disk image"
cp "$(ls "$rootfs"/boot/vmlinuz-* | sort | tail -n1)" "$out/vmlinuz"
cp "$(ls "$rootfs"/boot/initrd.img-* | sort | tail -n1)" "$out/initrd.img"
chmod 0644 "$out/vmlinuz" "$out/initrd.img"
chroot "$rootfs" apt-get clean
rm -f "$out/rootfs.ext4"
mkfs.ext4 -q -F -L edgefleet-root -d "$rootfs" "$out/rootfs.ext4" "$size"
qemu-img convert -f raw -O qcow2 "$out/rootfs.ext4" "$out/edgefleet-debian.qcow2"
rm -f "$out/rootfs.ext4"
qemu-img info "$out/edgefleet-debian.qcow2" | sed -n '1,4p'
echo "root filesystem tree: $rootfs"
echo "boot: qemu-system-x86_64 -kernel $out/vmlinuz -initrd $out/initrd.img -append 'root=/dev/vda console=ttyS0' -drive file=$out/edgefleet-debian.qcow2,if=virtio,format=qcow2 ..."
