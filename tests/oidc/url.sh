# tests/oidc/url.sh: URL helpers the tests/oidc scripts source (bash; jq for urlencode).
# urlencode VALUE: VALUE percent-encoded for a query.
urlencode() { jq -rn --arg v "$1" '$v|@uri'; }
# urldecode VALUE: '+' as a space, %XX as its byte.
urldecode() { local s=${1//+/ }; printf '%b' "${s//%/\\x}"; }
# query_param URL NAME: the (decoded) value of NAME in URL's query; 1 when it has none.
query_param() {
  local q=${1#*\?} kv
  q=${q%%#*}
  local IFS='&'
  for kv in $q; do
    if [ "${kv%%=*}" = "$2" ]; then urldecode "${kv#*=}"; return 0; fi
  done
  return 1
}
