#!/bin/sh
# Starts one Redis of the StatefulSet descprod-redis (redis.yaml): writes its configuration into
# /run/redis (a memory volume of the pod, mode 0600) from redis.conf, the pod's name and the Secret
# descprod-redis, then runs redis-server on it. No password is ever on a command line.
#
# Users: `default` off; `descprod` for the gateway, the daemon and the notifier (redis.username,
# the key descprod-password), the service's keys only and no @dangerous command but ROLE, as
# config/systemd/users.acl; `admin` (the key admin-password) for replication, the sentinels and
# the operators' redis-cli.
set -eu
# Kubernetes sets HOSTNAME to the pod's name (descprod-redis-0, ...).
# shellcheck disable=SC3028
pod=${HOSTNAME:-$(hostname)}
secrets=/etc/redis-secrets
conf=/run/redis/redis.conf
self="$pod.descprod-redis-headless"
first="descprod-redis-0.descprod-redis-headless"

. "$(dirname "$0")/sentinel-master.sh"
admin=$(secret admin-password)
descprod=$(secret descprod-password)

# Whom to follow: the master the sentinels name when one of them answers (after a failover it
# need not be pod 0), else pod 0. A Redis that comes back after a failover thus rejoins as a
# replica instead of starting a second master.
master=$(sentinel_master "$admin")
[ -n "$master" ] || master=$first

umask 077
{
  echo "include /opt/descprod-redis/redis.conf"
  echo "replica-announce-ip $self"
  echo "user default off resetpass -@all"
  echo "user descprod on #$(sha256 "$descprod") ~descprod:* &* +@all -@dangerous +role"
  echo "user admin on #$(sha256 "$admin") ~* &* +@all"
  echo "masteruser admin"
  echo "masterauth $admin"
  if [ "$master" != "$self" ]; then
    echo "replicaof $master 6379"
  fi
  # The components follow the sentinels (redis.sentinels), so the sentinels promote the replica
  # when the master is lost; "no" (replica-priority 0) keeps failovers for an operator to ask.
  if [ "${pod##*-}" != 0 ] && [ "${DESCPROD_REDIS_PROMOTE_REPLICAS:-yes}" != yes ]; then
    echo "replica-priority 0"
  fi
} >"$conf"
echo "start-redis: $self starts as $([ "$master" = "$self" ] && echo master || echo "replica of $master")" >&2
exec redis-server "$conf"
