#!/usr/bin/env bash
# Runs one lab node's libvirtd, virtlogd and virtlockd in a private mount namespace in which
# /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are that
# node's own folders. Two nodes' daemons then share nothing with each other or with the machine.
# With "hide-kvm", that node's libvirtd and its QEMUs see a machine without /dev/kvm, so TCG is
# exercised on every machine. It must be absent, not masked: libvirt takes a /dev/kvm it can open for
# "KVM became usable" and probes QEMU's capabilities again before every domain start (~20 s each).
# So /dev is a tmpfs holding a bind of every entry of the real /dev except kvm, and its own ptys.
# Started by test/env/libvirt.ts as:
#   [ip netns exec NS] unshare --mount --propagation private -- libvirtd-sandbox.sh NODE_DIR [hide-kvm]
# libvirtd is exec'd last, so the PID the caller recorded is libvirtd's own.
set -euo pipefail
node_dir=$1
if [ "${2:-}" = hide-kvm ] && [ -e /dev/kvm ]; then
  mkdir -p "$node_dir/host-dev"
  mount --rbind /dev "$node_dir/host-dev"
  mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
  shopt -s dotglob nullglob
  for entry in "$node_dir/host-dev"/*; do
    name=${entry##*/}
    case $name in kvm | ptmx | pts) continue ;; esac
    if [ -L "$entry" ]; then
      cp -P "$entry" "/dev/$name"
    elif [ -d "$entry" ]; then
      mkdir "/dev/$name"
      mount --rbind "$entry" "/dev/$name"
    else
      : >"/dev/$name"
      mount --bind "$entry" "/dev/$name"
    fi
  done
  shopt -u dotglob nullglob
  umount -l "$node_dir/host-dev"
  # A pty master must be opened beside its own devpts: a private instance, as containers have.
  mkdir /dev/pts
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
  ln -s pts/ptmx /dev/ptmx
fi
for sub in etc run lib log cache; do mkdir -p "$node_dir/$sub"; done
mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
mount --bind "$node_dir/etc" /etc/libvirt
mount --bind "$node_dir/run" /run/libvirt
mount --bind "$node_dir/lib" /var/lib/libvirt
mount --bind "$node_dir/log" /var/log/libvirt
mount --bind "$node_dir/cache" /var/cache/libvirt
virtlogd --daemon --pid-file /run/libvirt/virtlogd.pid
virtlockd --daemon --pid-file /run/libvirt/virtlockd.pid
exec libvirtd --pid-file /run/libvirt/libvirtd.pid
