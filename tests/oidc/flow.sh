#!/usr/bin/env bash
# tests/oidc/flow.sh: the OpenID Connect authorization code flow (PKCE S256, state, nonce,
# client_secret_basic) with curl only, against the glewlwyd that tests/oidc/provider.sh started,
# as a browser and a relying party would run it; prints the ID token and checks its RS256
# signature against the provider's JWKS with openssl.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: tests/oidc/flow.sh DIR [REDIRECT_URI]
       tests/oidc/flow.sh -h

DIR is the directory of `tests/oidc/provider.sh start DIR`; REDIRECT_URI one of the client's
redirect URIs (default: the first of them). Steps:
  1. discovery: GET <issuer>/.well-known/openid-configuration
  2-4. the authorization request (response_type=code, client_id, redirect_uri, scope, state,
     nonce, code_challenge=BASE64URL(SHA256(verifier)), code_challenge_method=S256), then the
     login and consent at the provider, by tests/oidc/login.sh: the provider redirects to
     REDIRECT_URI?code=...&state=... (state checked)
  5. POST the token endpoint: grant_type=authorization_code, code, redirect_uri, code_verifier,
     client authentication client_secret_basic (HTTP Basic)
  6. the ID token: header and payload printed (base64url-decoded); alg RS256, iss, aud, azp,
     nonce, exp and iat checked; the signature verified with openssl against the JWKS key with
     the token's kid (turned into a PEM); the code replayed must be refused
Exits 0 only if every step worked. Files of the run go to DIR/flow/.

Environment (all optional): FLOW_USER, FLOW_PASSWORD (default alice and her password),
  FLOW_SCOPE (default "openid"), FLOW_CLIENT_ID, FLOW_CLIENT_SECRET (default the provider's
  client), FLOW_PLUGIN (default oidc; "rogue" signs with a key that the oidc JWKS lacks, so the
  signature check fails there), FLOW_QUIET=1 (print only the ID token), FLOW_NONCE (the
  authorization request's nonce; default random), FLOW_TOKEN_ONLY=1 (print the ID token as the
  provider issued it and stop: no check of it, for a relying party's own checks).
USAGE
}

die() { echo "flow.sh: FAILED: $*" >&2; exit 1; }
step() { [ "${FLOW_QUIET:-0}" = 1 ] || echo "== $*" >&2; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -le 2 ] || { usage >&2; exit 2; }
DIR=$(cd "$1" && pwd) || die "no such directory: $1"
[ -r "$DIR/provider.env" ] || die "$DIR/provider.env missing: run tests/oidc/provider.sh start $DIR"
for t in curl jq openssl od; do command -v "$t" >/dev/null || die "$t is not installed"; done
# shellcheck disable=SC1091
. "$DIR/provider.env"

REDIRECT_URI=${2:-${OIDC_REDIRECT_URI%% *}}
USER_NAME=${FLOW_USER:-$OIDC_USER}
if [ -n "${FLOW_PASSWORD:-}" ]; then PASSWORD=$FLOW_PASSWORD
elif [ "$USER_NAME" = "$OIDC_USER2" ]; then PASSWORD=$OIDC_PASSWORD2
else PASSWORD=$OIDC_PASSWORD; fi
SCOPE=${FLOW_SCOPE:-openid}
CLIENT_ID=${FLOW_CLIENT_ID:-$OIDC_CLIENT_ID}
if [ -n "${FLOW_CLIENT_SECRET:-}" ]; then CLIENT_SECRET=$FLOW_CLIENT_SECRET
elif [ "$CLIENT_ID" = "$OIDC_OTHER_CLIENT_ID" ]; then CLIENT_SECRET=$OIDC_OTHER_CLIENT_SECRET
else CLIENT_SECRET=$OIDC_CLIENT_SECRET; fi
PLUGIN=${FLOW_PLUGIN:-oidc}
ISSUER=$OIDC_ISSUER
API=$OIDC_API_URL

W="$DIR/flow"
rm -rf "$W"
mkdir -p "$W"
CURL=(curl -sS --max-time 10)

# base64url helpers (RFC 4648 section 5, no padding)
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
b64url_decode() {
  local s
  s=$(printf '%s' "$1" | tr -- '-_' '+/')
  case $(( ${#s} % 4 )) in
    2) s="$s==" ;;
    3) s="$s=" ;;
    1) return 1 ;;
  esac
  printf '%s' "$s" | openssl base64 -d -A
}
# shellcheck source=url.sh
. "$(dirname "${BASH_SOURCE[0]}")/url.sh"

# ---- 1. discovery ----------------------------------------------------------------------------
step "discovery: $ISSUER/.well-known/openid-configuration"
"${CURL[@]}" -f -o "$W/discovery.json" "$ISSUER/.well-known/openid-configuration" ||
  die "discovery did not answer"
[ "$(jq -r .issuer "$W/discovery.json")" = "$ISSUER" ] ||
  die "discovery issuer $(jq -r .issuer "$W/discovery.json") is not $ISSUER"
jq -e '.code_challenge_methods_supported | index("S256")' "$W/discovery.json" >/dev/null ||
  die "the provider does not announce PKCE S256"
AUTHZ=$(jq -r .authorization_endpoint "$W/discovery.json")
TOKEN_EP=$(jq -r .token_endpoint "$W/discovery.json")
JWKS_URI=$(jq -r .jwks_uri "$W/discovery.json")
if [ "$PLUGIN" != oidc ]; then
  # Another plugin instance's endpoints; the keys stay the issuer's (what a relying party trusts).
  AUTHZ="$API/$PLUGIN/auth"
  TOKEN_EP="$API/$PLUGIN/token"
fi
step "JWKS: $JWKS_URI"
"${CURL[@]}" -f -o "$W/jwks.json" "$JWKS_URI" || die "JWKS $JWKS_URI did not answer"

# ---- 2. authorization request ----------------------------------------------------------------
VERIFIER=$(openssl rand 48 | b64url)                       # 64 characters of [A-Za-z0-9_-]
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | b64url)
STATE=$(openssl rand -hex 16)
NONCE=${FLOW_NONCE:-$(openssl rand -hex 16)}
AUTH_URL="$AUTHZ?response_type=code&client_id=$(urlencode "$CLIENT_ID")&redirect_uri=$(urlencode "$REDIRECT_URI")&scope=$(urlencode "$SCOPE")&state=$STATE&nonce=$NONCE&code_challenge=$CHALLENGE&code_challenge_method=S256"
step "authorization request: $AUTH_URL"
# 2-4: the person's part at the provider (login page, consent), as login.sh does it.
LOC=$("$(dirname "${BASH_SOURCE[0]}")/login.sh" "$DIR" "$AUTH_URL" "$USER_NAME" "$PASSWORD") ||
  die "logging in at the provider as $USER_NAME failed"
case "$LOC" in
  "$REDIRECT_URI?"*) ;;
  *) die "not redirected to $REDIRECT_URI but to $LOC" ;;
esac
if ERR=$(query_param "$LOC" error); then die "authorization error $ERR: $LOC"; fi
step "  -> $LOC"
CODE=$(query_param "$LOC" code) || die "no code in $LOC"
[ "$(query_param "$LOC" state || true)" = "$STATE" ] || die "state in the redirect is not ours: $LOC"

# ---- 5. token request (client_secret_basic, PKCE verifier) ------------------------------------
step "token request: POST $TOKEN_EP (client_secret_basic as $CLIENT_ID)"
token_request() { # OUTFILE: prints the HTTP status
  "${CURL[@]}" -o "$1" -w '%{http_code}' -u "$(urlencode "$CLIENT_ID"):$(urlencode "$CLIENT_SECRET")" \
    --data-urlencode grant_type=authorization_code --data-urlencode "code=$CODE" \
    --data-urlencode "redirect_uri=$REDIRECT_URI" --data-urlencode "code_verifier=$VERIFIER" \
    "$TOKEN_EP"
}
CODE_HTTP=$(token_request "$W/token.json")
[ "$CODE_HTTP" = 200 ] || die "token endpoint: HTTP $CODE_HTTP $(head -c 500 "$W/token.json")"
ID_TOKEN=$(jq -r '.id_token // empty' "$W/token.json")
[ -n "$ID_TOKEN" ] || die "no id_token in the token response: $(head -c 500 "$W/token.json")"
printf '%s\n' "$ID_TOKEN" > "$W/id_token"
jq -e '.token_type | ascii_downcase == "bearer"' "$W/token.json" >/dev/null || die "token_type is not bearer"

# ---- 6. the ID token -------------------------------------------------------------------------
IFS=. read -r H P S <<<"$ID_TOKEN"
if [ -z "$H" ] || [ -z "$P" ] || [ -z "$S" ]; then die "the ID token is not a JWS compact serialization"; fi
b64url_decode "$H" > "$W/id_token.header.json" || die "header is not base64url"
b64url_decode "$P" > "$W/id_token.payload.json" || die "payload is not base64url"
b64url_decode "$S" > "$W/id_token.sig" || die "signature is not base64url"
jq -e . "$W/id_token.header.json" >/dev/null || die "header is not JSON"
jq -e . "$W/id_token.payload.json" >/dev/null || die "payload is not JSON"
if [ "${FLOW_TOKEN_ONLY:-0}" = 1 ]; then
  # The ID token as the provider issued it, for a relying party's own checks (tests).
  printf '%s\n' "$ID_TOKEN"
  exit 0
fi
if [ "${FLOW_QUIET:-0}" = 1 ]; then
  printf '%s\n' "$ID_TOKEN"
else
  echo "ID token header:"
  jq . "$W/id_token.header.json"
  echo "ID token payload:"
  jq . "$W/id_token.payload.json"
fi

ALG=$(jq -r .alg "$W/id_token.header.json")
KID=$(jq -r '.kid // empty' "$W/id_token.header.json")
[ "$ALG" = RS256 ] || die "alg is $ALG, not RS256"
NOW=$(date +%s)
jq -e --arg iss "$ISSUER" --arg aud "$CLIENT_ID" --arg nonce "$NONCE" --argjson now "$NOW" '
  (.iss == $iss) and
  ((.aud == $aud) or ((.aud | type) == "array" and (.aud | index($aud)))) and
  ((.azp // $aud) == $aud) and
  (.nonce == $nonce) and
  ((.exp | type) == "number" and .exp > $now) and
  ((.iat | type) == "number" and .iat <= $now + 60) and
  ((.sub | type) == "string" and (.sub | length) > 0)' "$W/id_token.payload.json" >/dev/null ||
  die "claims: want iss=$ISSUER aud=$CLIENT_ID nonce=$NONCE, exp in the future (now $NOW)"

# The JWKS key with the token's kid, as an RSA public key PEM: the JWK's n and e in an ASN.1
# RSAPublicKey (openssl asn1parse -genconf), then SubjectPublicKeyInfo PEM.
JWK=$(jq -c --arg kid "$KID" '[.keys[] | select(.kty == "RSA" and ($kid == "" or .kid == $kid))][0] // empty' "$W/jwks.json")
[ -n "$JWK" ] || die "no RSA key with kid '$KID' in the JWKS $JWKS_URI"
hex() { b64url_decode "$1" | od -An -tx1 -v | tr -d ' \n'; }
N_HEX=$(hex "$(jq -r .n <<<"$JWK")")
E_HEX=$(hex "$(jq -r .e <<<"$JWK")")
printf 'asn1=SEQUENCE:rsa\n[rsa]\nn=INTEGER:0x%s\ne=INTEGER:0x%s\n' "$N_HEX" "$E_HEX" > "$W/jwk.asn1"
openssl asn1parse -genconf "$W/jwk.asn1" -out "$W/jwk.der" >/dev/null || die "building the JWK's DER failed"
openssl rsa -RSAPublicKey_in -inform DER -in "$W/jwk.der" -pubout -out "$W/jwk.pem" 2>/dev/null ||
  die "turning the JWK into a PEM failed"
printf '%s' "$H.$P" > "$W/id_token.signed"
if ! openssl dgst -sha256 -verify "$W/jwk.pem" -signature "$W/id_token.sig" "$W/id_token.signed" >"$W/verify.out" 2>&1; then
  die "RS256 signature does not verify with the JWKS key $KID: $(cat "$W/verify.out")"
fi
step "signature: $(cat "$W/verify.out") (JWKS key kid $KID, $W/jwk.pem)"
if [ "$PLUGIN" = oidc ] && [ -r "$DIR/signing.pub" ]; then
  cmp -s <(openssl pkey -pubin -in "$W/jwk.pem" -outform DER) <(openssl pkey -pubin -in "$DIR/signing.pub" -outform DER) ||
    die "the JWKS key is not the generated $DIR/signing.pub"
  step "the JWKS key is $DIR/signing.pub"
fi

# ---- 7. the code is single-use ----------------------------------------------------------------
CODE_HTTP=$(token_request "$W/replay.json")
[ "$CODE_HTTP" != 200 ] || die "the code was accepted twice"
step "code replay refused: HTTP $CODE_HTTP $(head -c 200 "$W/replay.json")"
step "OK: user $USER_NAME, client $CLIENT_ID, sub $(jq -r .sub "$W/id_token.payload.json")"
