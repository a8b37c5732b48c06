"""The Python clients of the interop suite (run by run.sh): smtplib sends over smtps and
STARTTLS, then imaplib (implicit TLS and STARTTLS) and poplib (implicit TLS and STLS) log
in as alice and wait until every message sent by any client has arrived."""

import imaplib
import os
import poplib
import smtplib
import socket
import ssl
import sys
import time

NAME = "mail.example.com"
CA = os.environ["CA"]
PORT = {k: int(os.environ[k]) for k in ("MF_IMAPS", "MF_POP3S", "MF_SMTPS", "MF_SUBMISSION", "MF_IMAP", "MF_POP3")}
USER, PASSWORD = "alice@example.com", "secret"
EXPECTED = [
    "interop curl smtps",
    "interop curl submission",
    "interop swaks smtps",
    "interop swaks submission",
    "interop smtplib smtps",
    "interop smtplib submission",
]
failures = []


def context():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.check_hostname = True
    return ctx


def loopback(port, timeout):
    """Connects to 127.0.0.1 while the library keeps NAME for SNI and verification."""
    return socket.create_connection(("127.0.0.1", port), timeout)


class IMAP4SSL(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(loopback(self.port, timeout), server_hostname=self.host)


class IMAP4(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return loopback(self.port, timeout)


class POP3SSL(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        return self.context.wrap_socket(loopback(self.port, timeout), server_hostname=self.host)


class POP3(poplib.POP3):
    def _create_socket(self, timeout):
        return loopback(self.port, timeout)


class SMTPSSL(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(loopback(port, timeout), server_hostname=self._host)


class SMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return loopback(port, timeout)


def check(what, fn):
    try:
        fn()
        print(f"interop: ok: {what}")
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
        print(f"interop: FAIL: {what}: {e!r}")
        failures.append(what)


def message(subject):
    return f"From: {USER}\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\nbody\r\n"


def send_smtps():
    with SMTPSSL(NAME, PORT["MF_SMTPS"], context=context(), timeout=20) as s:
        s.login(USER, PASSWORD)
        s.sendmail(USER, [USER], message("interop smtplib smtps"))


def send_submission():
    with SMTP(NAME, PORT["MF_SUBMISSION"], timeout=20) as s:
        s.ehlo()
        assert s.has_extn("starttls"), "STARTTLS advertised before TLS"
        s.starttls(context=context())
        s.ehlo()
        assert s.has_extn("auth"), "AUTH advertised by Postfix after TLS"
        s.login(USER, PASSWORD)
        s.sendmail(USER, [USER], message("interop smtplib submission"))


def imap_subjects(imap):
    imap.login(USER, PASSWORD)
    imap.select("INBOX")
    _, data = imap.search(None, "ALL")
    subjects = []
    for num in data[0].split():
        _, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects.append(parts[0][1].decode().strip().removeprefix("Subject: "))
    imap.logout()
    return subjects


def wait_for_all(fetch, what):
    deadline = time.monotonic() + 20
    while True:
        subjects = fetch()
        missing = [s for s in EXPECTED if s not in subjects]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: missing {missing}; have {subjects}")
        time.sleep(0.5)


def read_imaps():
    wait_for_all(lambda: imap_subjects(IMAP4SSL(NAME, PORT["MF_IMAPS"], ssl_context=context(), timeout=20)), "imaps")


def read_imap_starttls():
    def fetch():
        imap = IMAP4(NAME, PORT["MF_IMAP"], timeout=20)
        assert "STARTTLS" in imap.capabilities and "LOGINDISABLED" in imap.capabilities
        imap.starttls(ssl_context=context())
        return imap_subjects(imap)

    wait_for_all(fetch, "imap STARTTLS")


def pop3_subjects(pop):
    pop.user(USER)
    pop.pass_(PASSWORD)
    count, _ = pop.stat()
    subjects = []
    for i in range(1, count + 1):
        _, lines, _ = pop.top(i, 0)
        for line in lines:
            if line.startswith(b"Subject: "):
                subjects.append(line[9:].decode())
    pop.quit()
    return subjects


def read_pop3s():
    wait_for_all(lambda: pop3_subjects(POP3SSL(NAME, PORT["MF_POP3S"], context=context(), timeout=20)), "pop3s")


def read_pop3_stls():
    def fetch():
        pop = POP3(NAME, PORT["MF_POP3"], timeout=20)
        assert "STLS" in pop.capa(), "STLS advertised before TLS"
        pop.stls(context=context())
        return pop3_subjects(pop)

    wait_for_all(fetch, "pop3 STLS")


check("smtplib sends over smtps (login)", send_smtps)
check("smtplib sends over submission (STARTTLS, login)", send_submission)
check("imaplib (imaps) finds every message sent", read_imaps)
check("imaplib (STARTTLS) finds every message sent", read_imap_starttls)
check("poplib (pop3s) finds every message sent", read_pop3s)
check("poplib (STLS) finds every message sent", read_pop3_stls)
sys.exit(1 if failures else 0)
