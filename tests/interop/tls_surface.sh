#!/usr/bin/env bash
# The TLS surface, as scanners see it: testssl.sh against every listener kind (https,
# smtps, imaps, pop3s, and the STARTTLS ones with -t), gated on its JSON findings: any of
# severity MEDIUM or above fails the run, bar the few listed below that describe the test
# certificates rather than the TLS mailfront offers. sslscan must agree: TLS 1.2 and 1.3
# only, AEAD suites only, no renegotiation, no Heartbleed.
#
# Everything on 127.0.0.1, generated in a temporary directory, removed on exit.
# Run as root (CI is); installs testssl.sh, sslscan and openssl with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

say() { echo "tls-surface: $*"; }
fail() { echo "tls-surface: FAIL: $*" >&2; exit 1; }

. "$ROOT/tests/interop/lib.sh"
install_missing tls-surface "testssl testssl.sh" "sslscan sslscan" "openssl openssl" \
    "python3 python3"
cargo build --release --locked -q
MAILFRONT=$ROOT/target/release/mailfront

WORK=$(mktemp -d /tmp/mailfront-tls-surface.XXXXXX)
PID=
cleanup() {
    [ -z "$PID" ] || kill "$PID" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# --- certificates: a CA, an ECDSA and an RSA leaf for the same name ------------------------
say "certificates"
mkdir -p "$WORK/store" "$WORK/default"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
    -subj "/CN=tls-surface test CA" -keyout ca.key -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
leaf() { # name file key-options...
    local name=$1 file=$2; shift 2
    openssl req -newkey "$@" -nodes -subj "/CN=$name" -keyout "$file.key" -out "$file.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$name" > "$file.ext"
    openssl x509 -req -in "$file.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 90 \
        -extfile "$file.ext" -out "$file.crt" 2>/dev/null
    cat "$file.crt" ca.pem > "$file.chain"
}
leaf mail.example.test ecdsa ec -pkeyopt ec_paramgen_curve:P-256
leaf mail.example.test rsa rsa:2048
leaf server.example.test server ec -pkeyopt ec_paramgen_curve:P-256
# ECDSA served first, RSA to clients that only take RSA: both entries carry the name.
cat ecdsa.chain ecdsa.key > store/mail-ecdsa.pem
cp rsa.chain store/mail-rsa.crt
cp rsa.key store/mail-rsa.key
cp server.chain default/fullchain.pem
cp server.key default/privkey.pem
chmod 600 default/privkey.pem store/mail-ecdsa.pem store/mail-rsa.key
cd "$ROOT"

# --- mailfront: one listener of each kind; the backend is never reached by a scan that
# matters here (a closed port: mailfront answers with the protocol's "try later").
P_HTTPS=33443 P_SMTPS=33465 P_IMAPS=33993 P_POP3S=33995 P_SUB=33587 P_IMAP=33143 P_POP3=33110
cat > "$WORK/mailfront.toml" <<EOF
[server]
name = "server.example.test"
[certs]
dir = "store"
default_cert = "default/fullchain.pem"
default_key = "default/privkey.pem"
ca_bundle = "ca.pem"
$(for spec in "https https $P_HTTPS" "smtps smtps $P_SMTPS" "imaps imaps $P_IMAPS" \
              "pop3s pop3s $P_POP3S" "submission smtp-starttls $P_SUB" \
              "imap imap-starttls $P_IMAP" "pop3 pop3-starttls $P_POP3"; do
    set -- $spec
    printf '[[listener]]\nname = "%s"\nbind = "127.0.0.1:%s"\nprotocol = "%s"\nbackend = "127.0.0.1:9"\n' "$1" "$3" "$2"
done)
EOF
"$MAILFRONT" run --config "$WORK/mailfront.toml" 2> "$WORK/mailfront.log" &
PID=$!
for _ in $(seq 1 100); do
    [ "$(grep -c 'listening' "$WORK/mailfront.log" 2>/dev/null)" -ge 7 ] && break
    sleep 0.1
done
[ "$(grep -c 'listening' "$WORK/mailfront.log")" -ge 7 ] || { cat "$WORK/mailfront.log"; fail "mailfront did not start"; }

# --- testssl.sh ----------------------------------------------------------------------------
# Scanned by name (SNI mail.example.test) at 127.0.0.1, with the test CA added, so the
# certificate checks judge the certificate a client of that name gets. Findings that
# describe the private test PKI or the webmail behind the proxy, not the TLS mailfront
# offers, and only those, are not held against it:
#   cert_chain_of_trust    the test CA is in none of testssl's public stores (--add-ca
#                          adds it to its checks, not to every store it reports on)
#   cert_revocation, cert_crlDistributionPoints, cert_ocspURL, OCSP_stapling, DNS_CAArecord
#                          a private test CA publishes no CRL, OCSP responder or CAA record
#   HSTS, security_headers HTTP headers are the webmail's (the backend is down here and the
#                          answer is mailfront's own 502)
IGNORE="cert_chain_of_trust cert_revocation cert_crlDistributionPoints cert_ocspURL \
OCSP_stapling DNS_CAArecord HSTS security_headers"
status=0
scan() { # label port [starttls-protocol]
    local label=$1 port=$2 json="$WORK/testssl-$1.json"
    local args=(--quiet --color 0 --warnings off --sneaky --add-ca "$WORK/ca.pem"
                --ip 127.0.0.1 --nodns none --jsonfile "$json" --append)
    [ -z "${3:-}" ] || args+=(-t "$3")
    say "testssl $label (port $port${3:+, STARTTLS $3})"
    if ! timeout 900 testssl "${args[@]}" "mail.example.test:$port" > "$WORK/testssl-$label.txt" 2>&1; then
        # testssl exits non-zero for findings too; the JSON decides below.
        [ -s "$json" ] || { tail -30 "$WORK/testssl-$label.txt"; status=1; echo "tls-surface: FAIL: testssl did not run on $label"; return; }
    fi
    python3 - "$json" "$label" "$IGNORE" <<'PY' || status=1
import json, sys
path, label, ignore = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
findings = json.load(open(path))
# With several certificates (ECDSA and RSA here) ids carry a " <cert#N>" suffix.
bad = [f for f in findings
       if f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL")
       and f.get("id", "").split(" <cert#")[0] not in ignore]
# The scan must have reached the TLS layer: protocols were judged.
judged = {f["id"] for f in findings}
for needed in ("SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"):
    if needed not in judged:
        print(f"tls-surface: FAIL: {label}: testssl reported nothing on {needed}")
        sys.exit(1)
for f in bad:
    print(f"tls-surface: FAIL: {label}: {f['severity']} {f['id']}: {f.get('finding')}")
print(f"tls-surface: {label}: {len(findings)} findings, none MEDIUM or above outside the test-PKI list"
      if not bad else f"tls-surface: {label}: {len(bad)} findings MEDIUM or above")
sys.exit(1 if bad else 0)
PY
}
scan https "$P_HTTPS"
scan smtps "$P_SMTPS"
scan imaps "$P_IMAPS"
scan pop3s "$P_POP3S"
scan submission "$P_SUB" smtp
scan imap "$P_IMAP" imap
scan pop3 "$P_POP3" pop3

# --- sslscan agrees ------------------------------------------------------------------------
for spec in "imaps $P_IMAPS" "submission $P_SUB --starttls-smtp" "imap $P_IMAP --starttls-imap" \
            "pop3 $P_POP3 --starttls-pop3"; do
    set -- $spec
    say "sslscan $1"
    out=$(timeout 300 sslscan --no-colour --sni-name=mail.example.test ${3:-} "127.0.0.1:$2" 2>&1) || true
    echo "$out" > "$WORK/sslscan-$1.txt"
    check() { echo "$out" | grep -Eq "$1" || { status=1; echo "tls-surface: FAIL: sslscan $spec: no line matching '$1'"; }; }
    check 'SSLv3 +disabled'
    check 'TLSv1\.0 +disabled'
    check 'TLSv1\.1 +disabled'
    check 'TLSv1\.2 +enabled'
    check 'TLSv1\.3 +enabled'
    # Debian's sslscan is built without zlib and cannot test compression; testssl did.
    check 'Compression disabled|OpenSSL version does not support compression'
    check 'Session renegotiation not supported'
    check 'not vulnerable to heartbleed'
    if echo "$out" | grep -Eq 'Accepted +TLSv1\.[01]|Accepted +SSLv'; then
        status=1; echo "tls-surface: FAIL: sslscan $1 accepted an old protocol"
    fi
    if echo "$out" | grep -E 'Accepted|Preferred' | grep -Eqv 'GCM|CHACHA20|POLY1305'; then
        status=1; echo "tls-surface: FAIL: sslscan $1 accepted a non-AEAD suite"
    fi
done

[ "$status" -eq 0 ] || { tail -20 "$WORK/mailfront.log"; fail "see above"; }
say "all passed"
