#!/bin/sh
# Starts one sentinel of the StatefulSet descprod-redis-sentinel (sentinel.yaml). Its
# configuration lives in /data (a volume of the pod: Sentinel rewrites it); a sentinel restarted
# by Kubernetes keeps its name and, through `sentinel myid` made from that name, its identity, so
# the others never count it twice. The components ask it for the master as the user descprod
# (the services' password): that user may only ask for the master's address and listen for
# +switch-master.
set -eu
# Kubernetes sets HOSTNAME to the pod's name (descprod-redis-sentinel-0, ...).
# shellcheck disable=SC3028
pod=${HOSTNAME:-$(hostname)}
secrets=/etc/redis-secrets
conf=/data/sentinel.conf
self="$pod.descprod-redis-sentinel"
. "$(dirname "$0")/sentinel-master.sh"
admin=$(secret admin-password)
descprod=$(secret descprod-password)

# The master the other sentinels know (after a failover, not pod 0), else pod 0.
master=$(sentinel_master "$admin" "$pod")
[ -n "$master" ] || master=descprod-redis-0.descprod-redis-headless

umask 077
cat >"$conf" <<CONF
port 26379
bind * -::*
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $self
sentinel myid $(printf %s "$pod" | sha1sum | cut -c1-40)
requirepass $admin
user descprod on #$(sha256 "$descprod") resetchannels &+switch-master -@all +auth +hello +ping +subscribe +sentinel|get-master-addr-by-name
sentinel sentinel-pass $admin
sentinel monitor descprod $master 6379 2
sentinel auth-user descprod admin
sentinel auth-pass descprod $admin
sentinel down-after-milliseconds descprod 5000
sentinel failover-timeout descprod 60000
sentinel parallel-syncs descprod 1
CONF
echo "start-sentinel: $self monitors $master" >&2
exec redis-server "$conf" --sentinel
