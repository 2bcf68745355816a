#!/usr/bin/env bash
# Runs one lab node's libvirtd, virtlogd and virtlockd in a private mount namespace in which
# /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are that
# node's own folders. Two nodes' daemons then share nothing with each other or with the machine.
# Started by test/env/libvirt.ts as:
#   [ip netns exec NS] unshare --mount --propagation private -- libvirtd-sandbox.sh NODE_DIR
# libvirtd is exec'd last, so the PID the caller recorded is libvirtd's own.
set -euo pipefail
node_dir=$1
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
