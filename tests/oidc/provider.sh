#!/usr/bin/env bash
# tests/oidc/provider.sh: a real OpenID Connect provider for tests -- Debian's glewlwyd (bookworm
# 2.7.5) on a random loopback port, with everything (sqlite database, config, keys, log, PID) in
# one directory. Configured through glewlwyd's own admin REST API; see usage below.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: tests/oidc/provider.sh start DIR [REDIRECT_URI...]
       tests/oidc/provider.sh redirect DIR REDIRECT_URI...
       tests/oidc/provider.sh stop DIR
       tests/oidc/provider.sh status DIR
       tests/oidc/provider.sh -h

start  Creates DIR (its earlier provider files are replaced), a fresh sqlite database from the
       schema glewlwyd ships, a config file, RSA key pairs (openssl), and starts glewlwyd on
       127.0.0.1:<random free port> (PID in DIR/glewlwyd.pid, log in DIR/glewlwyd.log). Then, as
       the schema's admin (admin/password), through glewlwyd's admin API it adds:
         scopes   profile, email (openid is in the schema); all need the password
         users    alice (alice@example.org), bob (bob@example.org), in the database user module
         plugin   "oidc": OpenID Connect, RS256 with DIR/signing.key, code flow, PKCE (S256 only),
                  id token with name, email and preferred_username (= the user name)
         client   "descprod": confidential, client_secret_basic or _post, code flow, scopes
                  openid profile email, redirect URIs = REDIRECT_URI... (see below)
         client   "other": the same, with another secret (an ID token for the wrong audience)
         plugin   "rogue": same issuer, signed with another key (DIR/rogue.key) that the
                  "oidc" JWKS does not hold (an ID token with an unknown kid / bad signature)
       Waits (bounded) for the discovery document, then prints
         OIDC_ISSUER=http://127.0.0.1:PORT/api/oidc
         OIDC_PORT=PORT
       and writes DIR/issuer, DIR/port and DIR/provider.env (every name and secret, sourceable).
redirect  Replaces the redirect URIs of both clients (descprod and other) with REDIRECT_URI...:
       a relying party started after the provider (on a random port) registers its callback.
stop   Stops the glewlwyd started in DIR (by DIR/glewlwyd.pid; TERM, then KILL after 10 s).
status Exit 0 and print DIR/provider.env when DIR's glewlwyd is running, 1 otherwise.

Environment (all optional):
  OIDC_REDIRECT_URI    redirect URIs (space separated) when none is given as an argument;
                       default http://127.0.0.1:18080/login/oidc/callback
  OIDC_CLIENT_ID       default descprod       OIDC_CLIENT_SECRET  default descprod-test-secret
  OIDC_TOKEN_TTL       access and ID token lifetime in seconds, default 3600 (minimum 1)
  OIDC_CODE_TTL        authorization code lifetime in seconds, default 600
  OIDC_PKCE_REQUIRED   1 (default): an authorization request without code_challenge is refused;
                       0: PKCE optional (S256 only either way)
  OIDC_WEBAPP          1 (default): serve glewlwyd's login web page (a copy of
                       /usr/share/glewlwyd/webapp in DIR/webapp) at http://127.0.0.1:PORT/login.html,
                       so that a real browser can log in; 0: API only (the redirect to login.html
                       then gets a 404, curl-driven flows do not need it)
  OIDC_PORT            a fixed port instead of a random free one
  OIDC_START_TIMEOUT   seconds to wait for glewlwyd to answer, default 20
Needs: glewlwyd sqlite3 openssl curl jq (apt-get install -y glewlwyd sqlite3 jq).
USAGE
}

die() { echo "provider.sh: $*" >&2; exit 1; }
say() { echo "provider.sh: $*" >&2; }

# ---- helpers ---------------------------------------------------------------------------------

need_tools() {
  local t missing=()
  for t in glewlwyd sqlite3 openssl curl jq; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing: ${missing[*]} (apt-get install -y glewlwyd sqlite3 openssl curl jq)"
}

# The sqlite3 schema glewlwyd ships (with the admin user, password "password"). Debian puts it
# under /usr/share/doc (which slim images may drop) and, without the DROP lines, for dbconfig.
schema_sql() {
  local doc=/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz
  local dbc=/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3
  if [ -r "$doc" ]; then
    gzip -dc "$doc"
  elif [ -r "$dbc" ]; then
    cat "$dbc"
  else
    die "glewlwyd's sqlite3 schema not found ($doc, $dbc): is the glewlwyd package installed?"
  fi
}

port_busy() {
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# owns_port PID PORT: PID has a socket listening on 127.0.0.1:PORT (from /proc: an answer on the
# port alone could come from another server, e.g. one that took the port before glewlwyd bound).
owns_port() {
  local pid=$1 hex inode
  hex=$(printf '%04X' "$2")
  while read -r inode; do
    if find "/proc/$pid/fd" -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null | grep -q .; then
      return 0
    fi
  done < <(awk -v a="0100007F:$hex" '$2 == a && $4 == "0A" {print $10}' /proc/net/tcp 2>/dev/null)
  return 1
}

pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    port_busy "$p" || { echo "$p"; return 0; }
  done
  return 1
}

# pid_of DIR: the PID in DIR/glewlwyd.pid if that process is the glewlwyd started with DIR's config.
pid_of() {
  local dir=$1 pid
  [ -r "$dir/glewlwyd.pid" ] || return 1
  pid=$(cat "$dir/glewlwyd.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "--config-file=$dir/glewlwyd.conf" || return 1
  echo "$pid"
}

log_tail() { if [ -r "$DIR/glewlwyd.log" ]; then tail -n 20 "$DIR/glewlwyd.log" >&2; fi; }

# api METHOD PATH [BODY_FILE]: the admin API as admin (cookie jar DIR/admin.jar); fails unless 200.
api() {
  local method=$1 path=$2 body=${3:-} code args=()
  args=(-sS --max-time 10 -o "$DIR/api.out" -w '%{http_code}' -X "$method"
        -b "$DIR/admin.jar" -c "$DIR/admin.jar")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "@$body")
  code=$(curl "${args[@]}" "$API$path") || { log_tail; die "$method $path: curl failed"; }
  if [ "$code" != 200 ]; then
    say "$method $path: HTTP $code: $(head -c 2000 "$DIR/api.out")"
    log_tail
    die "setting up glewlwyd failed"
  fi
}

# ---- start -----------------------------------------------------------------------------------

write_config() {
  cat > "$DIR/glewlwyd.conf" <<EOF
# glewlwyd config written by tests/oidc/provider.sh (libconfig syntax)
port=$PORT
bind_address="127.0.0.1"
external_url="http://127.0.0.1:$PORT"
login_url="login.html"
api_prefix="api"
allow_origin="*"
log_mode="console"
log_level="INFO"
cookie_secure=0
cookie_same_site="empty"
session_expiration=3600
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie"
profile_session_authentication="cookie"
allow_multiple_user_per_session=true
login_api_enabled=true
add_x_frame_option_header_deny=true
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
hash_algorithm="SHA512"
database = {
  type = "sqlite3"
  path = "$DIR/glewlwyd.db"
}
EOF
  if [ "$WEBAPP" = 1 ]; then
    cat >> "$DIR/glewlwyd.conf" <<EOF
static_files_path="$DIR/webapp/"
static_files_mime_types = (
  { extension = ".html" mime_type = "text/html" },
  { extension = ".css" mime_type = "text/css" },
  { extension = ".js" mime_type = "application/javascript" },
  { extension = ".json" mime_type = "application/json" },
  { extension = ".map" mime_type = "application/octet-stream" },
  { extension = ".png" mime_type = "image/png" },
  { extension = ".jpg" mime_type = "image/jpeg" },
  { extension = ".svg" mime_type = "image/svg+xml" },
  { extension = ".ico" mime_type = "image/x-icon" },
  { extension = ".ttf" mime_type = "font/ttf" },
  { extension = ".woff" mime_type = "font/woff" },
  { extension = ".woff2" mime_type = "font/woff2" },
  { extension = ".otf" mime_type = "font/otf" },
  { extension = ".eot" mime_type = "application/vnd.ms-fontobject" }
)
EOF
  fi
}

# The login web page: glewlwyd serves no symbolic link (and Debian's webapp/config.json is a link
# to a directory), so a copy, with the web page's config.json from the package's template.
copy_webapp() {
  local src=/usr/share/glewlwyd/webapp f conf=/usr/share/glewlwyd/templates/config.json
  [ -d "$src" ] || die "$src missing (OIDC_WEBAPP=0 runs without the login page)"
  [ -r "$conf" ] || conf=/etc/glewlwyd/config-2.7.json/config.json
  [ -r "$conf" ] || die "the web page's config.json template is missing (OIDC_WEBAPP=0 runs without it)"
  mkdir -p "$DIR/webapp"
  for f in "$src"/*; do
    [ "$(basename "$f")" = config.json ] || cp -RL "$f" "$DIR/webapp/"
  done
  jq '.GlewlwydUrl = "./"' "$conf" > "$DIR/webapp/config.json"
}

# launch: starts glewlwyd on $PORT and waits until its API answers; 1 if it died (e.g. the port
# was taken meanwhile), 2 if it did not answer within START_TIMEOUT seconds (then it is killed).
launch() {
  local pid deadline
  write_config
  : >> "$DIR/glewlwyd.log"
  # No terminal, no pipe of the caller's kept open (a caller reading our output with $(...) would
  # wait for the daemon otherwise): stdin from /dev/null, stdout and stderr to the log.
  glewlwyd --config-file="$DIR/glewlwyd.conf" </dev/null >>"$DIR/glewlwyd.log" 2>&1 &
  pid=$!
  echo "$pid" > "$DIR/glewlwyd.pid"
  deadline=$(( SECONDS + START_TIMEOUT ))
  while [ $SECONDS -lt $deadline ]; do
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null || true
      rm -f "$DIR/glewlwyd.pid"
      return 1
    fi
    if owns_port "$pid" "$PORT" &&
       curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/config/" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$DIR/glewlwyd.pid"
  return 2
}

plugin_json() { # NAME ISSUER KEYFILE PUBFILE OUT
  jq -n --arg name "$1" --arg iss "$2" --rawfile key "$3" --rawfile cert "$4" \
        --argjson ttl "$TOKEN_TTL" --argjson code_ttl "$CODE_TTL" \
        --argjson pkce_required "$([ "$PKCE_REQUIRED" = 1 ] && echo true || echo false)" '{
    module: "oidc", name: $name, display_name: ("OpenID Connect " + $name), enabled: true,
    parameters: {
      iss: $iss,
      "jwt-type": "rsa", "jwt-key-size": "256", key: $key, cert: $cert,
      "access-token-duration": $ttl, "refresh-token-duration": 1209600,
      "code-duration": $code_ttl, "refresh-token-rolling": false,
      "allow-non-oidc": false,
      "auth-type-code-enabled": true, "auth-type-code-revoke-replayed": false,
      "auth-type-token-enabled": false, "auth-type-id-token-enabled": true,
      "auth-type-none-enabled": false, "auth-type-password-enabled": false,
      "auth-type-client-enabled": false, "auth-type-device-enabled": false,
      "auth-type-refresh-enabled": false,
      scope: [], "additional-parameters": [],
      claims: [{name: "preferred_username", "user-property": "username", type: "string",
                mandatory: true, "on-demand": false, scope: []}],
      "name-claim": "mandatory", "name-claim-scope": [],
      "email-claim": "mandatory", "email-claim-scope": [],
      "scope-claim": "no", "scope-claim-scope": [],
      "address-claim": {type: "no", mandatory: false},
      "secret-type": "public",
      "allowed-scope": ["openid", "profile", "email"],
      "restrict-scope-client-property": "scope",
      "pkce-allowed": true, "pkce-method-plain-allowed": false,
      "pkce-required": $pkce_required, "pkce-required-public-client": true, "pkce-scopes": [],
      "jwks-show": true, "jwks-x5c": [],
      "request-parameter-allow": false, "session-management-allowed": false,
      "introspection-revocation-allowed": false, "register-client-allowed": false,
      "oauth-as-iss-id": false
    }}' > "$5"
}

client_json() { # ID SECRET NAME OUT
  jq -n --arg id "$1" --arg secret "$2" --arg name "$3" --arg uris "$REDIRECT_URIS" '{
    client_id: $id, name: $name, description: "tests/oidc/provider.sh", enabled: true,
    confidential: true, client_secret: $secret,
    redirect_uri: ($uris | split(" ") | map(select(length > 0))),
    authorization_type: ["code"], response_mode: "query",
    token_endpoint_auth_method: ["client_secret_basic", "client_secret_post"],
    scope: ["openid", "profile", "email"]}' > "$4"
}

user_json() { # USERNAME NAME EMAIL PASSWORD OUT
  jq -n --arg u "$1" --arg n "$2" --arg e "$3" --arg p "$4" '{
    username: $u, name: $n, email: $e, password: $p, enabled: true,
    scope: ["g_profile", "openid", "profile", "email"]}' > "$5"
}

stop_on_failure() {
  local status=$?
  [ "$status" -eq 0 ] || cmd_stop_quiet
  exit "$status"
}

env_line() { printf '%s=%q\n' "$1" "$2"; }

cmd_start() {
  local f attempt ok=0 uri deadline status
  need_tools
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  running=$(pid_of "$DIR" || true)
  [ -z "$running" ] || die "a glewlwyd is already running from $DIR (PID $running): stop it first"
  for f in glewlwyd.conf glewlwyd.db glewlwyd.db-journal glewlwyd.pid glewlwyd.log admin.jar \
           api.out signing.key signing.pub rogue.key rogue.pub issuer port provider.env \
           discovery.json jwks.json json webapp flow; do
    rm -rf "${DIR:?}/$f"
  done
  mkdir -p "$DIR/json"

  REDIRECT_URIS=${*:-${OIDC_REDIRECT_URI:-http://127.0.0.1:18080/login/oidc/callback}}
  for uri in $REDIRECT_URIS; do
    [[ "$uri" =~ ^https?://[^[:space:]]+$ ]] || die "not a redirect URI: $uri"
  done
  CLIENT_ID=${OIDC_CLIENT_ID:-descprod}
  CLIENT_SECRET=${OIDC_CLIENT_SECRET:-descprod-test-secret}
  [ "$CLIENT_ID" != other ] || die "OIDC_CLIENT_ID 'other' is taken by the second client"
  TOKEN_TTL=${OIDC_TOKEN_TTL:-3600}
  CODE_TTL=${OIDC_CODE_TTL:-600}
  START_TIMEOUT=${OIDC_START_TIMEOUT:-20}
  PKCE_REQUIRED=${OIDC_PKCE_REQUIRED:-1}
  WEBAPP=${OIDC_WEBAPP:-1}
  [[ "$PKCE_REQUIRED" =~ ^[01]$ ]] || die "OIDC_PKCE_REQUIRED must be 0 or 1"
  [[ "$WEBAPP" =~ ^[01]$ ]] || die "OIDC_WEBAPP must be 0 or 1"
  [[ "$TOKEN_TTL" =~ ^[1-9][0-9]*$ ]] || die "OIDC_TOKEN_TTL must be a positive integer"
  [[ "$CODE_TTL" =~ ^[1-9][0-9]*$ ]] || die "OIDC_CODE_TTL must be a positive integer"
  [[ "$START_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "OIDC_START_TIMEOUT must be a positive integer"

  # Database from the shipped schema; keys for RS256 (PKCS#8 PEM private key, SPKI PEM public).
  # (one transaction: statement by statement, sqlite syncs each, 15 times slower)
  { echo 'BEGIN;'; schema_sql; echo 'COMMIT;'; } | sqlite3 -bail "$DIR/glewlwyd.db" ||
    die "initialising $DIR/glewlwyd.db failed"
  for f in signing rogue; do
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/$f.key" 2>/dev/null ||
      die "openssl genpkey failed"
    openssl pkey -in "$DIR/$f.key" -pubout -out "$DIR/$f.pub" || die "openssl pkey -pubout failed"
  done
  chmod 600 "$DIR/signing.key" "$DIR/rogue.key"
  [ "$WEBAPP" = 0 ] || copy_webapp

  # A random free port; should another process take it before glewlwyd binds, try another.
  for attempt in 1 2 3 4 5; do
    if [ -n "${OIDC_PORT:-}" ]; then
      PORT=$OIDC_PORT
      if ! [[ "$PORT" =~ ^[1-9][0-9]*$ ]] || [ "$PORT" -ge 65536 ]; then die "OIDC_PORT is not a port: $PORT"; fi
      ! port_busy "$PORT" || die "port $PORT (OIDC_PORT) is in use"
    else
      PORT=$(pick_port) || die "no free port found"
    fi
    status=0
    launch || status=$?
    if [ "$status" = 0 ]; then ok=1; break; fi
    if [ "$status" = 2 ]; then say "glewlwyd did not answer on port $PORT within $START_TIMEOUT s"; break; fi
    say "glewlwyd exited instead of listening on port $PORT (attempt $attempt)"
    [ -z "${OIDC_PORT:-}" ] || break
  done
  if [ "$ok" != 1 ]; then
    log_tail
    die "glewlwyd did not start (log: $DIR/glewlwyd.log)"
  fi
  # From here on, stop the daemon if the setup fails or is interrupted.
  trap stop_on_failure EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  BASE="http://127.0.0.1:$PORT"
  API="$BASE/api"
  ISSUER="$API/oidc"

  # Admin session (the schema's admin user).
  jq -n '{username: "admin", password: "password"}' > "$DIR/json/admin-login.json"
  api POST /auth/ "$DIR/json/admin-login.json"

  # Scopes: openid is in the schema (without password); profile and email are added.
  jq -n '{display_name: "Open ID", description: "OpenID Connect scope", password_required: true,
          password_max_age: 0, scheme: {}}' > "$DIR/json/scope-openid.json"
  api PUT /scope/openid "$DIR/json/scope-openid.json"
  for f in profile email; do
    jq -n --arg s "$f" '{name: $s, display_name: $s, description: ("OpenID Connect " + $s + " scope"),
            password_required: true, password_max_age: 0, scheme: {}}' > "$DIR/json/scope-$f.json"
    api POST /scope/ "$DIR/json/scope-$f.json"
  done

  # Users, in the schema's "database" user module (password hashed by glewlwyd).
  user_json alice "Alice Liddell" alice@example.org alice-password "$DIR/json/user-alice.json"
  api POST /user/ "$DIR/json/user-alice.json"
  user_json bob "Bob Builder" bob@example.org bob-password "$DIR/json/user-bob.json"
  api POST /user/ "$DIR/json/user-bob.json"

  # Clients, in the schema's "database" client module.
  client_json "$CLIENT_ID" "$CLIENT_SECRET" "DESCprod gateway" "$DIR/json/client.json"
  api POST /client/ "$DIR/json/client.json"
  client_json other other-test-secret "Another relying party" "$DIR/json/client-other.json"
  api POST /client/ "$DIR/json/client-other.json"

  # OpenID Connect plugin instances.
  plugin_json oidc "$ISSUER" "$DIR/signing.key" "$DIR/signing.pub" "$DIR/json/plugin-oidc.json"
  api POST /mod/plugin/ "$DIR/json/plugin-oidc.json"
  plugin_json rogue "$ISSUER" "$DIR/rogue.key" "$DIR/rogue.pub" "$DIR/json/plugin-rogue.json"
  api POST /mod/plugin/ "$DIR/json/plugin-rogue.json"

  # Discovery and JWKS answer (bounded wait: they do at once once the plugin is added).
  ok=0
  deadline=$(( SECONDS + START_TIMEOUT ))
  while [ $SECONDS -lt $deadline ]; do
    if curl -fsS --max-time 2 -o "$DIR/discovery.json" "$ISSUER/.well-known/openid-configuration" 2>/dev/null &&
       [ "$(jq -r .issuer "$DIR/discovery.json" 2>/dev/null)" = "$ISSUER" ] &&
       curl -fsS --max-time 2 -o "$DIR/jwks.json" "$(jq -r .jwks_uri "$DIR/discovery.json")" 2>/dev/null; then
      ok=1; break
    fi
    sleep 0.1
  done
  [ "$ok" = 1 ] || { log_tail; die "discovery $ISSUER/.well-known/openid-configuration does not answer"; }

  echo "$ISSUER" > "$DIR/issuer"
  echo "$PORT" > "$DIR/port"
  {
    echo "# written by tests/oidc/provider.sh start; source it"
    env_line OIDC_DIR "$DIR"
    env_line OIDC_PORT "$PORT"
    env_line OIDC_PID "$(cat "$DIR/glewlwyd.pid")"
    env_line OIDC_BASE_URL "$BASE"
    env_line OIDC_API_URL "$API"
    env_line OIDC_ISSUER "$ISSUER"
    env_line OIDC_DISCOVERY_URL "$ISSUER/.well-known/openid-configuration"
    env_line OIDC_AUTHORIZATION_ENDPOINT "$(jq -r .authorization_endpoint "$DIR/discovery.json")"
    env_line OIDC_TOKEN_ENDPOINT "$(jq -r .token_endpoint "$DIR/discovery.json")"
    env_line OIDC_JWKS_URL "$(jq -r .jwks_uri "$DIR/discovery.json")"
    env_line OIDC_KID "$(jq -r '.keys[0].kid' "$DIR/jwks.json")"
    env_line OIDC_CLIENT_ID "$CLIENT_ID"
    env_line OIDC_CLIENT_SECRET "$CLIENT_SECRET"
    env_line OIDC_REDIRECT_URI "$REDIRECT_URIS"
    env_line OIDC_OTHER_CLIENT_ID other
    env_line OIDC_OTHER_CLIENT_SECRET other-test-secret
    env_line OIDC_ROGUE_BASE_URL "$API/rogue"
    env_line OIDC_USER alice
    env_line OIDC_PASSWORD alice-password
    env_line OIDC_EMAIL alice@example.org
    env_line OIDC_USER2 bob
    env_line OIDC_PASSWORD2 bob-password
    env_line OIDC_EMAIL2 bob@example.org
    env_line OIDC_ADMIN_USER admin
    env_line OIDC_ADMIN_PASSWORD password
    env_line OIDC_TOKEN_TTL "$TOKEN_TTL"
    env_line OIDC_CODE_TTL "$CODE_TTL"
    env_line OIDC_PKCE_REQUIRED "$PKCE_REQUIRED"
    if [ "$WEBAPP" = 1 ]; then env_line OIDC_LOGIN_PAGE "$BASE/login.html"; else env_line OIDC_LOGIN_PAGE ""; fi
  } > "$DIR/provider.env"
  trap - EXIT INT TERM
  say "glewlwyd $(glewlwyd --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1) up, PID $(cat "$DIR/glewlwyd.pid"), log $DIR/glewlwyd.log"
  env_line OIDC_ISSUER "$ISSUER"
  env_line OIDC_PORT "$PORT"
}

# ---- redirect --------------------------------------------------------------------------------

cmd_redirect() {
  local uri
  [ $# -ge 1 ] || { usage >&2; exit 2; }
  for uri in "$@"; do
    [[ "$uri" =~ ^https?://[^[:space:]]+$ ]] || die "not a redirect URI: $uri"
  done
  [ -r "$DIR/provider.env" ] || die "$DIR/provider.env missing: start the provider first"
  # shellcheck disable=SC1091
  . "$DIR/provider.env"
  API=$OIDC_API_URL
  REDIRECT_URIS="$*"
  mkdir -p "$DIR/json"
  jq -n '{username: "admin", password: "password"}' > "$DIR/json/admin-login.json"
  api POST /auth/ "$DIR/json/admin-login.json"
  client_json "$OIDC_CLIENT_ID" "$OIDC_CLIENT_SECRET" "DESCprod gateway" "$DIR/json/client.json"
  api PUT "/client/$OIDC_CLIENT_ID" "$DIR/json/client.json"
  client_json "$OIDC_OTHER_CLIENT_ID" "$OIDC_OTHER_CLIENT_SECRET" "Another relying party" "$DIR/json/client-other.json"
  api PUT "/client/$OIDC_OTHER_CLIENT_ID" "$DIR/json/client-other.json"
  sed -i "/^OIDC_REDIRECT_URI=/d" "$DIR/provider.env"
  env_line OIDC_REDIRECT_URI "$REDIRECT_URIS" >> "$DIR/provider.env"
  say "redirect URIs: $REDIRECT_URIS"
}

# ---- stop / status ---------------------------------------------------------------------------

# alive PID: running (a zombie, dead but not yet reaped by its parent, is not).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

cmd_stop_quiet() {
  local pid
  pid=$(pid_of "$DIR") || { rm -f "$DIR/glewlwyd.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do # 10 s
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$DIR/glewlwyd.pid"
}

cmd_stop() {
  [ -d "$DIR" ] || die "no such directory: $DIR"
  DIR=$(cd "$DIR" && pwd)
  if ! pid_of "$DIR" >/dev/null; then
    rm -f "$DIR/glewlwyd.pid"
    say "no glewlwyd running from $DIR"
    return 0
  fi
  cmd_stop_quiet
  say "stopped"
}

cmd_status() {
  [ -d "$DIR" ] || exit 1
  DIR=$(cd "$DIR" && pwd)
  pid_of "$DIR" >/dev/null || exit 1
  cat "$DIR/provider.env"
}

# ---- main ------------------------------------------------------------------------------------

case "${1:-}" in
  -h|--help|help) usage; exit 0 ;;
  start|stop|status|redirect) ;;
  "") usage >&2; exit 2 ;;
  *) echo "provider.sh: unknown command $1" >&2; usage >&2; exit 2 ;;
esac
cmd=$1; shift
[ $# -ge 1 ] || { usage >&2; exit 2; }
DIR=$1; shift
case "$cmd" in
  start) cmd_start "$@" ;;
  redirect) cmd_redirect "$@" ;;
  stop) [ $# -eq 0 ] || { usage >&2; exit 2; }; cmd_stop ;;
  status) [ $# -eq 0 ] || { usage >&2; exit 2; }; cmd_status ;;
esac
