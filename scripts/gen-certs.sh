#!/usr/bin/env bash
# gen-certs.sh DIR: make a test CA, a server certificate for localhost and
# 127.0.0.1, and client certificates for a mailer and an admin, with openssl,
# for sendgate's mutual TLS (README, "Deploying securely"). Keys are ECDSA P-256; the
# certificates are valid for 365 days (DAYS to change).
#
#   DIR/ca.crt ca.key                 the CA (keep ca.key offline in production)
#   DIR/server.crt server.key         serve --tls-cert/--tls-key
#   DIR/mailer.crt mailer.key         URI SAN spiffe://sendgate.test/mailer, CN mailer
#   DIR/admin.crt admin.key           URI SAN spiffe://sendgate.test/admin,  CN admin
#
# Existing files are overwritten. For tests and first deployments; use your
# organisation's CA in production.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
command -v openssl >/dev/null || { echo "$0: openssl not found" >&2; exit 1; }
dir=$1
days=${DAYS:-365}
mkdir -p "$dir"
cd "$dir"
umask 077

openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=sendgate test CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out ca.crt 2>/dev/null

# issue NAME SUBJECT_CN EXTENDED_KEY_USAGE SAN
issue() {
	local name=$1 cn=$2 eku=$3 san=$4
	openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
	openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
		"$eku" "$san" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
		-extfile "$name.ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}

issue server localhost serverAuth "DNS:localhost,IP:127.0.0.1,IP:::1"
issue mailer mailer clientAuth "URI:spiffe://sendgate.test/mailer"
issue admin admin clientAuth "URI:spiffe://sendgate.test/admin"
rm -f ca.srl
chmod 644 ./*.crt
echo "wrote $(pwd)/{ca,server,mailer,admin}.{crt,key}"
