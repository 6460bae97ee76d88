# Sourced by start-redis.sh and start-sentinel.sh (the same ConfigMap, the same folder).
# sentinel_master ADMIN_PASSWORD [SKIP_POD]: prints the master the sentinels name (after a
# failover it need not be pod 0), asking each sentinel but SKIP_POD in turn; prints nothing when
# none of them answers with one of our Redis pods.
sentinel_master() {
  for i in 0 1 2; do
    [ "descprod-redis-sentinel-$i" != "${2:-}" ] || continue
    found=$(REDISCLI_AUTH="$1" timeout 3 redis-cli --no-auth-warning \
      -h "descprod-redis-sentinel-$i.descprod-redis-sentinel" -p 26379 \
      SENTINEL get-master-addr-by-name descprod 2>/dev/null | head -n 1) || found=
    case "$found" in
      descprod-redis-*.descprod-redis-headless)
        printf %s "$found"
        return 0 ;;
    esac
  done
  return 0
}
