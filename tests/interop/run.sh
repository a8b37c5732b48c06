#!/usr/bin/env bash
# Interop suite: real Dovecot (imap, pop3, lmtp, auth) and Postfix (submission) behind
# mailfront, driven by real clients: curl, openssl s_client, swaks, Python's imaplib,
# poplib and smtplib. Private instances on 127.0.0.1 ports with generated configs in a
# temporary directory; everything is stopped and removed on exit.
#
# Asserts: the certificate each name receives (per-domain, wildcard, server-wide
# mismatch) on every listener kind; that mail sent through mailfront's SMTP paths
# arrives in the mailbox read through its IMAP and POP3 paths; and that Dovecot and
# Postfix log the client's own address (127.0.0.2), passed in the PROXY header.
#
# Run as root (CI is); installs what it needs with apt-get.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

say() { echo "interop: $*"; }
fail() { echo "interop: FAIL: $*" >&2; exit 1; }

# --- what it needs ----------------------------------------------------------------------
. "$ROOT/tests/interop/lib.sh"
install_missing interop "dovecot dovecot-imapd dovecot-pop3d dovecot-lmtpd" "postfix postfix" \
    "swaks swaks" "openssl openssl" "curl curl" "python3 python3"
cargo build --release --locked -q
MAILFRONT=$ROOT/target/release/mailfront

# A fixed place: Postfix only takes a configuration directory listed in the system's
# alternate_config_directories, which should not collect a new name at every run.
WORK=/tmp/mailfront-interop
if [ -e "$WORK/dovecot.conf" ]; then dovecot -c "$WORK/dovecot.conf" stop 2>/dev/null || true; fi
if [ -e "$WORK/postfix/main.cf" ]; then postfix -c "$WORK/postfix" stop 2>/dev/null || true; fi
rm -rf "$WORK"
mkdir -m 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    dovecot -c "$WORK/dovecot.conf" stop 2>/dev/null || true
    postfix -c "$WORK/postfix" stop 2>/dev/null || true
    sleep 0.5
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# Ports: mailfront on 31xxx, the backends on 32xxx.
MF_IMAPS=31993 MF_POP3S=31995 MF_SMTPS=31465 MF_SUBMISSION=31587 MF_IMAP=31143 MF_POP3=31110
DC_IMAP=32143 DC_POP3=32110 DC_LMTP=32024 DC_AUTH=32012 PF_SUBMISSION=32587
CLIENT_IP=127.0.0.2   # clients connect from here; mailfront connects backends from 127.0.0.1

# --- certificates -------------------------------------------------------------------------
say "certificates"
mkdir -p "$WORK/pki" "$WORK/store"
(
    cd "$WORK/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=Interop CA" -keyout ca.key -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
    leaf() { # leaf FILE SAN
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
            -keyout "$1.key" -out "$1.csr" 2>/dev/null
        printf "subjectAltName=DNS:%s\n" "$2" > "$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile "$1.ext" -out "$1.crt" 2>/dev/null
        cat "$1.crt" ca.pem > "$1.chain"
    }
    leaf mail mail.example.com
    leaf wild '*.example.org'
    leaf server server.com
)
install -m 600 "$WORK/pki/mail.chain" "$WORK/store/mail.example.com.crt"
install -m 600 "$WORK/pki/mail.key" "$WORK/store/mail.example.com.key"
install -m 600 "$WORK/pki/wild.chain" "$WORK/store/wildcard.example.org.crt"
install -m 600 "$WORK/pki/wild.key" "$WORK/store/wildcard.example.org.key"
mkdir -p "$WORK/default"
install -m 600 "$WORK/pki/server.chain" "$WORK/default/fullchain.pem"
install -m 600 "$WORK/pki/server.key" "$WORK/default/privkey.pem"
CA=$WORK/pki/ca.pem

# --- Dovecot ------------------------------------------------------------------------------
say "dovecot"
id mailfront-vmail >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin mailfront-vmail
VUID=$(id -u mailfront-vmail) VGID=$(id -g mailfront-vmail)
mkdir -p "$WORK/dovecot/run" "$WORK/mail"
chown "$VUID:$VGID" "$WORK/mail"
echo "alice@example.com:{PLAIN}secret::::::" > "$WORK/dovecot/users"
cat > "$WORK/dovecot.conf" <<EOF
base_dir = $WORK/dovecot/run
state_dir = $WORK/dovecot/state
log_path = $WORK/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
haproxy_trusted_networks = 127.0.0.1/32
first_valid_uid = 1
mail_location = maildir:$WORK/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $WORK/dovecot/users
}
userdb {
  driver = static
  args = uid=$VUID gid=$VGID home=$WORK/mail/%u
}
service imap-login {
  inet_listener imap {
    port = $DC_IMAP
    haproxy = yes
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = $DC_POP3
    haproxy = yes
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $DC_LMTP
  }
}
service auth {
  inet_listener {
    address = 127.0.0.1
    port = $DC_AUTH
  }
}
protocol lmtp {
  auth_username_format = %u
}
EOF
dovecot -c "$WORK/dovecot.conf"

# --- Postfix ------------------------------------------------------------------------------
say "postfix"
PF=$WORK/postfix
mkdir -p "$PF"
cat > "$PF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = $WORK/postfix.log
maillog_file_prefixes = $WORK
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = backend.example.test
mydestination =
mynetworks = 127.0.0.1/32
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = example.com
virtual_transport = lmtp:inet:127.0.0.1:$DC_LMTP
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:$DC_AUTH
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, permit_auth_destination, reject
smtpd_tls_security_level = none
EOF
cat > "$PF/master.cf" <<EOF
127.0.0.1:$PF_SUBMISSION inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
# postfix -c wants the directory listed in the default configuration.
current=$(postconf -h alternate_config_directories 2>/dev/null || true)
case " $current " in
    *" $PF "*) ;;
    *) postconf -e "alternate_config_directories = $current $PF" ;;
esac
mkdir -p "$PF/queue" "$PF/data"
postfix -c "$PF" set-permissions create-missing >/dev/null 2>&1 || true
postfix -c "$PF" start 2>"$WORK/postfix.start" || { cat "$WORK/postfix.start" "$WORK/postfix.log" 2>/dev/null || true; fail "postfix did not start"; }

# --- mailfront ----------------------------------------------------------------------------
say "mailfront"
cat > "$WORK/mailfront.toml" <<EOF
[server]
name = "server.com"
[certs]
dir = "store"
default_cert = "default/fullchain.pem"
default_key = "default/privkey.pem"
ca_bundle = "pki/ca.pem"
$(for spec in "imaps imaps $MF_IMAPS $DC_IMAP" "pop3s pop3s $MF_POP3S $DC_POP3" \
              "smtps smtps $MF_SMTPS $PF_SUBMISSION" "submission smtp-starttls $MF_SUBMISSION $PF_SUBMISSION" \
              "imap imap-starttls $MF_IMAP $DC_IMAP" "pop3 pop3-starttls $MF_POP3 $DC_POP3"; do
    set -- $spec
    printf '[[listener]]\nname = "%s"\nbind = "127.0.0.1:%s"\nprotocol = "%s"\nbackend = "127.0.0.1:%s"\nproxy_protocol = "v2"\n' "$1" "$3" "$2" "$4"
done)
EOF
"$MAILFRONT" --log-format json run --config "$WORK/mailfront.toml" 2> "$WORK/mailfront.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
    [ "$(grep -c '"listening"' "$WORK/mailfront.log" 2>/dev/null)" -ge 6 ] && break
    sleep 0.1
done
[ "$(grep -c '"listening"' "$WORK/mailfront.log")" -ge 6 ] || { cat "$WORK/mailfront.log"; fail "mailfront did not start"; }
for port in $DC_IMAP $DC_POP3 $DC_LMTP $PF_SUBMISSION; do
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

# --- the clients --------------------------------------------------------------------------
export WORK CA CLIENT_IP MF_IMAPS MF_POP3S MF_SMTPS MF_SUBMISSION MF_IMAP MF_POP3
status=0
bash "$ROOT/tests/interop/clients.sh" || status=$?
python3 "$ROOT/tests/interop/clients.py" || status=$?

# --- what the backends saw ----------------------------------------------------------------
say "backend logs"
grep -q "rip=$CLIENT_IP" "$WORK/dovecot.log" || { status=1; echo "interop: FAIL: Dovecot never logged rip=$CLIENT_IP (PROXY)"; }
grep -q "connect from unknown\[$CLIENT_IP\]" "$WORK/postfix.log" || { status=1; echo "interop: FAIL: Postfix never logged the client $CLIENT_IP (PROXY)"; }
if [ "$status" -ne 0 ]; then
    echo "---- mailfront.log (tail)"; tail -20 "$WORK/mailfront.log"
    echo "---- dovecot.log (tail)"; tail -20 "$WORK/dovecot.log"
    echo "---- postfix.log (tail)"; tail -20 "$WORK/postfix.log"
    fail "see above"
fi
say "all passed"
