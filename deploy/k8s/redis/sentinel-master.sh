# Sourced by start-redis.sh and start-sentinel.sh (the same ConfigMap, the same folder).
# secret KEY: prints the key of the Secret descprod-redis (mounted at $secrets), which must be a
# non-empty word of letters, digits, '.', '_' or '-'; exits 2 otherwise.
secret() {
  value=$(cat "$secrets/$1")
  case "$value" in
    '' | *[!A-Za-z0-9._-]*)
      echo "$0: the key $1 of the Secret descprod-redis must be a non-empty word of" \
        "letters, digits, '.', '_' or '-' (openssl rand -hex 32)" >&2
      exit 2 ;;
  esac
  printf %s "$value"
}
sha256() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

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
