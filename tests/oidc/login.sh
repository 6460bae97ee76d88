#!/usr/bin/env bash
# tests/oidc/login.sh: what a person does at the provider's login page, with curl: given the URL
# of an authorization request (as a relying party sends the browser to it), logs in at the
# glewlwyd that tests/oidc/provider.sh started, consents, and prints where the provider sends the
# browser back (REDIRECT_URI?code=...&state=..., or ?error=...).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: tests/oidc/login.sh DIR AUTHORIZATION_URL [USER [PASSWORD]]
       tests/oidc/login.sh -h

DIR is the directory of `tests/oidc/provider.sh start DIR`. USER defaults to alice (PASSWORD to
the provider's password for alice or bob). Steps, with a cookie jar in DIR/login-<pid>.jar:
  1. GET AUTHORIZATION_URL: glewlwyd answers 302 to its login page; its callback_url parameter is
     the authorization request again
  2. POST <api>/auth/ {"username","password"}, then the consent: PUT <api>/auth/grant/<client_id>
     with the request's scope
  3. GET callback_url&g_continue: 302 to the relying party's redirect URI; that URL is printed
Exits 0 when the provider redirected to the relying party (code or error), 1 otherwise.
USAGE
}

die() { echo "login.sh: FAILED: $*" >&2; exit 1; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -ge 2 ] && [ $# -le 4 ] || { usage >&2; exit 2; }
DIR=$(cd "$1" && pwd) || die "no such directory: $1"
AUTH_URL=$2
[ -r "$DIR/provider.env" ] || die "$DIR/provider.env missing: run tests/oidc/provider.sh start $DIR"
# shellcheck disable=SC1091
. "$DIR/provider.env"
USER_NAME=${3:-$OIDC_USER}
if [ $# -ge 4 ]; then PASSWORD=$4
elif [ "$USER_NAME" = "$OIDC_USER2" ]; then PASSWORD=$OIDC_PASSWORD2
else PASSWORD=$OIDC_PASSWORD; fi
API=$OIDC_API_URL
JAR="$DIR/login-$$.jar"
trap 'rm -f "$JAR" "$JAR.body"' EXIT
CURL=(curl -sS --max-time 10 -b "$JAR" -c "$JAR")

# shellcheck source=url.sh
. "$(dirname "${BASH_SOURCE[0]}")/url.sh"

LOC=$("${CURL[@]}" -o "$JAR.body" -w '%{http_code} %{redirect_url}' "$AUTH_URL")
[ "${LOC%% *}" = 302 ] || die "authorization endpoint answered ${LOC%% *}, not 302: $(head -c 500 "$JAR.body")"
LOC=${LOC#* }
if ERR=$(query_param "$LOC" error); then
  # Refused at once (a bad request): the provider sent the browser back with an error.
  printf '%s\n' "$LOC"
  exit 0
fi
CALLBACK_URL=$(query_param "$LOC" callback_url) || die "the authorization endpoint did not send to the login page: $LOC"
CLIENT_ID=$(query_param "$AUTH_URL" client_id) || die "no client_id in $AUTH_URL"
SCOPE=$(query_param "$AUTH_URL" scope) || SCOPE=openid

CODE=$("${CURL[@]}" -o "$JAR.body" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary "$(jq -n --arg u "$USER_NAME" --arg p "$PASSWORD" '{username: $u, password: $p}')" "$API/auth/")
[ "$CODE" = 200 ] || die "login as $USER_NAME: HTTP $CODE $(head -c 300 "$JAR.body")"
CODE=$("${CURL[@]}" -o "$JAR.body" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  --data-binary "$(jq -n --arg s "$SCOPE" '{scope: $s}')" "$API/auth/grant/$(urlencode "$CLIENT_ID")")
[ "$CODE" = 200 ] || die "consent: HTTP $CODE $(head -c 300 "$JAR.body")"

LOC=$("${CURL[@]}" -o "$JAR.body" -w '%{http_code} %{redirect_url}' "$CALLBACK_URL&g_continue")
[ "${LOC%% *}" = 302 ] || die "authorization endpoint answered ${LOC%% *}, not 302: $(head -c 500 "$JAR.body")"
printf '%s\n' "${LOC#* }"
