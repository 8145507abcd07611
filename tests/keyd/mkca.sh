#!/bin/sh
# Make a throw-away PKI for the key-service tests in DIR:
#   ca.pem/ca.key             the test CA
#   server.pem/server.key     pactfs-keyd's certificate for 127.0.0.1 and localhost,
#                             signed by ca
#   client.pem/client.key     a client certificate signed by ca
#   wronghost.pem/.key        signed by ca, but for the name "elsewhere.invalid"
#   other-ca.pem/other-ca.key another CA, unknown to the client
#   other-server.pem/.key     a server certificate for 127.0.0.1 signed by other-ca
# Usage: mkca.sh DIR
set -eu
dir=${1:?usage: mkca.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

mkca() { # name subject
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

mkcert() { # name ca subject san extendedKeyUsage
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "/CN=$3" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$4" "$5" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

mkca ca "pactfs test CA"
mkca other-ca "some other CA"
mkcert server ca "pactfs-keyd test" "IP:127.0.0.1,DNS:localhost" serverAuth
mkcert client ca "pactfs test client" "DNS:client.invalid" clientAuth
mkcert wronghost ca "elsewhere" "DNS:elsewhere.invalid" serverAuth
mkcert other-server other-ca "pactfs-keyd impostor" "IP:127.0.0.1,DNS:localhost" serverAuth
rm -f ./*.srl
chmod 600 ./*.key
chmod 644 ./*.pem
