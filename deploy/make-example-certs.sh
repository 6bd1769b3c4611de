#!/bin/sh
# A small certificate authority and a server certificate for the registry, with openssl.
#
#   deploy/make-example-certs.sh OUT_DIR [NAME ...]
#       your own: OUT_DIR/ca.crt and ca.key (the CA: keep ca.key offline, it signs more
#       certificates), tls.crt and tls.key (the server certificate for the NAMEs, DNS names
#       or IP addresses; default: the service names below). Clients trust ca.crt.
#
#   deploy/make-example-certs.sh --example
#       regenerates the EXAMPLE files shipped in the repository (compose/secrets/*.example.*,
#       k8s/*.example.*). Their private key is public: anyone can impersonate a registry
#       that serves them, and the registry logs a WARNING at start-up when it does. The CA's
#       key is thrown away, so nobody can sign anything else with the example CA.
#
# Keys are ECDSA P-256. SERVER_DAYS (default 825) and CA_DAYS (default 3650) set the
# validity; the examples are valid for 3650 days. Works with OpenSSL 1.1.1 and 3.x.
set -eu

DEFAULT_NAMES="localhost 127.0.0.1 registry.internal frontend simple-registry \
simple-registry.simple-registry simple-registry.simple-registry.svc \
simple-registry.simple-registry.svc.cluster.local"
EXAMPLE_MARK="simple-registry EXAMPLE - published key, do not use"

usage() {
    echo "usage: $0 OUT_DIR [NAME ...] | $0 --example" >&2
    exit 2
}
[ $# -ge 1 ] || usage
command -v openssl >/dev/null || {
    echo "$0: openssl is not installed" >&2
    exit 2
}

DEPLOY="$(cd "$(dirname "$0")" && pwd)"
EXAMPLE=0
if [ "$1" = "--example" ]; then
    [ $# -eq 1 ] || usage
    EXAMPLE=1
    SERVER_DAYS=3650
    CA_DAYS=3650
fi
SERVER_DAYS="${SERVER_DAYS:-825}"
CA_DAYS="${CA_DAYS:-3650}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [ "$EXAMPLE" = 1 ]; then
    OUT="$WORK/out"
    NAMES="$DEFAULT_NAMES"
    ORGANIZATION="/O=$EXAMPLE_MARK"
    CA_NAME="simple-registry EXAMPLE CA"
else
    OUT="$1"
    shift
    NAMES="${*:-$DEFAULT_NAMES}"
    ORGANIZATION=""
    CA_NAME="simple-registry CA"
fi
mkdir -p "$OUT"

# subjectAltName: IP: for addresses, DNS: for the rest; the CN is the first name.
san=""
for name in $NAMES; do
    case "$name" in
    *:*) entry="IP:$name" ;;         # IPv6
    *[!0-9.]*) entry="DNS:$name" ;;  # not only digits and dots
    *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done
first="${NAMES%% *}"

umask 077
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key"
openssl req -new -x509 -sha256 -key "$WORK/ca.key" -days "$CA_DAYS" \
    -subj "$ORGANIZATION/CN=$CA_NAME" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$WORK/ca.crt"

openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/tls.ec.key"
openssl pkcs8 -topk8 -nocrypt -in "$WORK/tls.ec.key" -out "$WORK/tls.key"
openssl req -new -sha256 -key "$WORK/tls.key" -subj "$ORGANIZATION/CN=$first" -out "$WORK/tls.csr"
cat >"$WORK/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
EOF
openssl x509 -req -sha256 -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -CAserial "$WORK/ca.srl" -days "$SERVER_DAYS" \
    -extfile "$WORK/server.ext" -out "$WORK/tls.crt" 2>/dev/null
openssl verify -CAfile "$WORK/ca.crt" "$WORK/tls.crt" >/dev/null

if [ "$EXAMPLE" = 0 ]; then
    cp "$WORK/ca.crt" "$WORK/ca.key" "$WORK/tls.crt" "$WORK/tls.key" "$OUT/"
    chmod 0644 "$OUT/ca.crt" "$OUT/tls.crt"
    chmod 0600 "$OUT/ca.key" "$OUT/tls.key"
    echo "wrote $OUT/ca.crt, ca.key, tls.crt, tls.key for: $NAMES" >&2
    echo "the registry runs as uid 10001: it must be able to read tls.key (chown 10001, or mode 0644 on a host only you use)" >&2
    exit 0
fi

# The shipped examples: the CA certificate and the server pair, no CA key. World-readable,
# as git stores them and as the registry's uid (10001) needs to read them from a bind mount.
# Text before a PEM block is ignored by OpenSSL, Go and Python: a warning for who opens them.
header() {
    echo "EXAMPLE $1 of simple-registry: the private key is published with the source."
    echo "Anyone can impersonate a registry serving it. Make your own: deploy/make-example-certs.sh"
}
for target in "$DEPLOY/compose/secrets" "$DEPLOY/k8s"; do
    { header "CA certificate" && cat "$WORK/ca.crt"; } >"$target/ca.example.crt"
    { header "server certificate" && cat "$WORK/tls.crt"; } >"$target/tls.example.crt"
    { header "server private key" && cat "$WORK/tls.key"; } >"$target/tls.example.key"
    chmod 0644 "$target/ca.example.crt" "$target/tls.example.crt" "$target/tls.example.key"
done
fingerprint="$(openssl x509 -in "$WORK/tls.crt" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)"
echo "wrote the EXAMPLE CA and server certificate to deploy/compose/secrets/ and deploy/k8s/" >&2
echo "put its SHA-256 in services/common/config/summary.py EXAMPLE_CERTIFICATES: $fingerprint" >&2
