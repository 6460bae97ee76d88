#!/bin/sh
# Starts one Redis of the StatefulSet descprod-redis (redis.yaml): writes its configuration into
# /run/redis (a memory volume of the pod, mode 0600) from redis.conf, the pod's name and the Secret
# descprod-redis, then runs redis-server on it. No password is ever on a command line.
#
# Users: `default` off; `descprod` for the gateway, the daemon and the notifier (redis.username,
# the key descprod-password), the service's keys only and no @dangerous command, as
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

secret() {
  value=$(cat "$secrets/$1")
  case "$value" in
    '' | *[!A-Za-z0-9._-]*)
      echo "start-redis: the key $1 of the Secret descprod-redis must be a non-empty word of" \
        "letters, digits, '.', '_' or '-' (openssl rand -hex 32)" >&2
      exit 2 ;;
  esac
  printf %s "$value"
}
admin=$(secret admin-password)
descprod=$(secret descprod-password)
sha256() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

# Whom to follow: the master the sentinels name when one of them answers (after a failover it
# need not be pod 0), else pod 0. A Redis that comes back after a failover thus rejoins as a
# replica instead of starting a second master.
. "$(dirname "$0")/sentinel-master.sh"
master=$(sentinel_master "$admin")
[ -n "$master" ] || master=$first

umask 077
{
  echo "include /opt/descprod-redis/redis.conf"
  echo "replica-announce-ip $self"
  echo "user default off resetpass -@all"
  echo "user descprod on #$(sha256 "$descprod") ~descprod:* &* +@all -@dangerous"
  echo "user admin on #$(sha256 "$admin") ~* &* +@all"
  echo "masteruser admin"
  echo "masterauth $admin"
  if [ "$master" != "$self" ]; then
    echo "replicaof $master 6379"
  fi
  # The components do not follow a Sentinel failover yet (they use the Service descprod-redis,
  # which is pod 0): until they do, the sentinels may not promote a replica by themselves.
  if [ "${pod##*-}" != 0 ] && [ "${DESCPROD_REDIS_PROMOTE_REPLICAS:-no}" != yes ]; then
    echo "replica-priority 0"
  fi
} >"$conf"
echo "start-redis: $self starts as $([ "$master" = "$self" ] && echo master || echo "replica of $master")" >&2
exec redis-server "$conf"
