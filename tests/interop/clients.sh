#!/usr/bin/env bash
# The command-line clients of the interop suite (run by run.sh, which exports the ports,
# the CA and the client address): openssl s_client on every listener kind and name, curl
# over imaps, pop3s, smtps and STARTTLS, swaks with --tlsc and --tls.
set -u
fails=0
ok() { echo "interop: ok: $1"; }
bad() { echo "interop: FAIL: $1"; echo "$2" | tail -15 | sed 's/^/    /'; fails=$((fails + 1)); }

# --- the certificate each name receives, on each listener ----------------------------------
for spec in "imaps $MF_IMAPS -" "pop3s $MF_POP3S -" "smtps $MF_SMTPS -" \
            "submission $MF_SUBMISSION smtp" "imap $MF_IMAP imap" "pop3 $MF_POP3 pop3"; do
    set -- $spec
    listener=$1 port=$2 starttls=$3
    extra=()
    [ "$starttls" != "-" ] && extra=(-starttls "$starttls")
    for case in "mail.example.com mail.example.com ok" "imap.example.org *.example.org ok" \
                "other.example.net server.com mismatch"; do
        set -- $case
        name=$1 subject=$2 want=$3
        out=$(timeout 15 openssl s_client -connect "127.0.0.1:$port" "${extra[@]}" \
            -servername "$name" -verify_hostname "$name" -CAfile "$CA" -brief </dev/null 2>&1)
        got_subject=$(echo "$out" | sed -n 's/^Peer certificate: CN *= *//p' | head -1)
        if [ "$want" = ok ]; then
            echo "$out" | grep -q "Verification: OK" && [ "$got_subject" = "$subject" ] \
                && ok "$listener: $name gets $subject, verified" \
                || bad "$listener: $name should get $subject, verified" "$out"
        else
            echo "$out" | grep -q "hostname mismatch" && [ "$got_subject" = "$subject" ] \
                && ok "$listener: $name gets the server-wide $subject (mismatch)" \
                || bad "$listener: $name should get the server-wide $subject" "$out"
        fi
    done
done

# --- curl: log in, list, send -------------------------------------------------------------
printf 'From: alice@example.com\r\nTo: alice@example.com\r\nSubject: %s\r\n\r\nbody\r\n' \
    "interop curl smtps" > "$WORK/msg-smtps.txt"
printf 'From: alice@example.com\r\nTo: alice@example.com\r\nSubject: %s\r\n\r\nbody\r\n' \
    "interop curl submission" > "$WORK/msg-submission.txt"
curl_to() { # curl_to PORT URL-SCHEME [curl args...]
    local port=$1 scheme=$2
    shift 2
    timeout 20 curl -sS --cacert "$CA" --interface "$CLIENT_IP" \
        --resolve "mail.example.com:$port:127.0.0.1" -u alice@example.com:secret \
        "$scheme://mail.example.com:$port/" "$@" 2>&1
}
out=$(curl_to "$MF_IMAPS" imaps) && echo "$out" | grep -q INBOX \
    && ok "curl imaps lists INBOX" || bad "curl imaps lists INBOX" "$out"
out=$(curl_to "$MF_IMAP" imap --ssl-reqd) && echo "$out" | grep -q INBOX \
    && ok "curl imap --ssl-reqd (STARTTLS) lists INBOX" || bad "curl imap --ssl-reqd lists INBOX" "$out"
out=$(curl_to "$MF_POP3S" pop3s) \
    && ok "curl pop3s lists the mailbox" || bad "curl pop3s lists the mailbox" "$out"
out=$(curl_to "$MF_POP3" pop3 --ssl-reqd) \
    && ok "curl pop3 --ssl-reqd (STLS) lists the mailbox" || bad "curl pop3 --ssl-reqd" "$out"
out=$(curl_to "$MF_SMTPS" smtps --mail-from alice@example.com --mail-rcpt alice@example.com \
    -T "$WORK/msg-smtps.txt") && ok "curl smtps sends" || bad "curl smtps sends" "$out"
out=$(curl_to "$MF_SUBMISSION" smtp --ssl-reqd --mail-from alice@example.com \
    --mail-rcpt alice@example.com -T "$WORK/msg-submission.txt") \
    && ok "curl smtp --ssl-reqd (STARTTLS) sends" || bad "curl smtp --ssl-reqd sends" "$out"

# --- swaks: implicit TLS and STARTTLS, with AUTH --------------------------------------------
swaks_to() { # swaks_to PORT TLS-FLAG SUBJECT
    timeout 20 swaks --server 127.0.0.1 --port "$1" "$2" --tls-sni mail.example.com \
        --tls-verify --tls-ca-path "$CA" --local-interface "$CLIENT_IP" \
        --auth PLAIN --auth-user alice@example.com --auth-password secret \
        --from alice@example.com --to alice@example.com --header "Subject: $3" 2>&1
}
out=$(swaks_to "$MF_SMTPS" --tlsc "interop swaks smtps") && echo "$out" | grep -q "queued" \
    && ok "swaks --tlsc sends over smtps" || bad "swaks --tlsc sends over smtps" "$out"
out=$(swaks_to "$MF_SUBMISSION" --tls "interop swaks submission") && echo "$out" | grep -q "queued" \
    && ok "swaks --tls sends over submission (STARTTLS)" || bad "swaks --tls over submission" "$out"

exit $((fails > 0))
