#!/bin/sh
# Regenerates the TLS test fixtures in this directory (ECDSA P-256, 10-year validity).
#
#   test-ca.crt/key       root CA that signs server.crt and client.crt
#   server.crt/key        SAN DNS:localhost, IP:127.0.0.1, IP:::1; EKU serverAuth
#   client.crt/key        CN=test-device; EKU clientAuth
#   other-ca.crt/key      an unrelated root CA
#   other-client.crt/key  CN=other-device, a client certificate signed by other-ca
#
# Usage: tests/data/make-test-certs.sh [output-dir]   (default: the script's directory)
# These are test fixtures only: the keys are committed and must never be trusted anywhere.
set -eu

out=${1:-$(dirname "$0")}
days=3650
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

genkey() { # $1: key file
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
    chmod 600 "$1"
}

make_ca() { # $1: basename, $2: CN
    genkey "$out/$1.key"
    openssl req -new -x509 -sha256 -days "$days" -key "$out/$1.key" -out "$out/$1.crt" \
        -subj "/O=mdmd tests/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
}

make_leaf() { # $1: basename, $2: CA basename, $3: CN, $4: extension file
    genkey "$out/$1.key"
    openssl req -new -sha256 -key "$out/$1.key" -out "$tmp/$1.csr" -subj "/O=mdmd tests/CN=$3"
    openssl x509 -req -sha256 -days "$days" -in "$tmp/$1.csr" \
        -CA "$out/$2.crt" -CAkey "$out/$2.key" -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$4" -out "$out/$1.crt"
}

cat >"$tmp/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT

cat >"$tmp/client.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT

make_ca test-ca "mdmd Test CA"
make_ca other-ca "mdmd Other CA"
make_leaf server test-ca localhost "$tmp/server.ext"
make_leaf client test-ca test-device "$tmp/client.ext"
make_leaf other-client other-ca other-device "$tmp/client.ext"

for f in server client other-client; do
    ca=test-ca
    [ "$f" = other-client ] && ca=other-ca
    openssl verify -CAfile "$out/$ca.crt" "$out/$f.crt" >/dev/null
done
echo "test certificates written to $out"
