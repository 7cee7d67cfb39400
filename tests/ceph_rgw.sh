#!/usr/bin/env bash
# A single-node Ceph RADOS gateway for one end-to-end test: one monitor, one memstore OSD,
# no cephx, everything under DIR on loopback.  Usage: ceph_rgw.sh DIR MON_PORT RGW_PORT ACCESS SECRET
# Prints "ready" when radosgw answers.  Stop with: kill $(cat DIR/*.pid)
# EDGE_RGW_MEMSTORE_BYTES sizes the in-memory OSD (default 2 GiB; bench/s3.py --radosgw asks for more).
set -euo pipefail
dir=$1 monport=$2 rgwport=$3 access=$4 secret=$5
mkdir -p "$dir"/{run,log,mon,osd0,rgw}
# A daemon that refuses to start says why only in its log (e.g. ceph-mon exits 28, ENOSPC, when the
# disk has less than mon_data_avail_crit = 5 % free): show the logs' tails with the failing line.
trap 'rc=$?; echo "ceph_rgw.sh: line $LINENO failed (exit $rc)"; tail -n 5 "$dir"/log/*.log 2>/dev/null; df -h "$dir" | tail -n 1' ERR
fsid=$(cat /proc/sys/kernel/random/uuid)
conf=$dir/ceph.conf
cat > "$conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$monport
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
ms bind msgr2 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon max pg per osd = 1000
osd objectstore = memstore
memstore device bytes = ${EDGE_RGW_MEMSTORE_BYTES:-2147483648}
osd data = $dir/osd\$id
mon data = $dir/mon
run dir = $dir/run
pid file = $dir/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
keyring = $dir/keyring
osd crush chooseleaf type = 0
[client.rgw.edge]
rgw frontends = beast endpoint=127.0.0.1:$rgwport
rgw data = $dir/rgw
ms mon client mode = crc
ms client mode = crc
rgw dns name = 127.0.0.1
CONF
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --addv a "[v1:127.0.0.1:$monport]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon -c "$conf" -i a
osd=$(ceph -c "$conf" osd create)
ceph-osd -c "$conf" -i "$osd" --mkfs >/dev/null 2>&1
ceph-osd -c "$conf" -i "$osd"
radosgw -c "$conf" -n client.rgw.edge
for i in $(seq 1 600); do
  if curl -s -o /dev/null "http://127.0.0.1:$rgwport/"; then break; fi
  sleep 0.1
done
radosgw-admin -c "$conf" -n client.rgw.edge user create --uid=edge --display-name=edge \
  --access-key="$access" --secret-key="$secret" >/dev/null
echo ready
