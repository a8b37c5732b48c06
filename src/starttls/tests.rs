//! The plain-text dialogues against an in-memory client, and greeting consumption.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Feeds `input` to the dialogue (then EOF) and returns the result and all it wrote.
async fn talk(mail: Mail, input: &[u8]) -> (Result<Plain, PlainError>, String) {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let result = negotiate(&mut server, mail, "mx.example.net").await;
    drop(server);
    let mut out = String::new();
    client.read_to_string(&mut out).await.unwrap();
    (result, out)
}

#[tokio::test]
async fn smtp_ehlo_then_starttls() {
    let (r, out) = talk(Mail::Smtp, b"EHLO client.example\r\nNOOP\r\nSTARTTLS\r\n").await;
    assert_eq!(r.unwrap(), Plain::Upgrade);
    assert_eq!(
        out,
        "220 mx.example.net ESMTP\r\n250-mx.example.net\r\n250-ENHANCEDSTATUSCODES\r\n\
         250 STARTTLS\r\n250 2.0.0 OK\r\n220 2.0.0 Ready to start TLS\r\n"
    );
}

#[tokio::test]
async fn smtp_refuses_mail_and_auth_before_tls_and_quits() {
    let (r, out) = talk(
        Mail::Smtp,
        b"HELO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b>\r\nXYZZY\r\nEHLO\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(r.unwrap(), Plain::Quit);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "220 mx.example.net ESMTP",
            "250 mx.example.net",
            "530 5.7.0 Must issue a STARTTLS command first",
            "530 5.7.0 Must issue a STARTTLS command first",
            "500 5.5.2 Command not recognized",
            "501 5.5.4 Syntax: EHLO hostname",
            "221 2.0.0 mx.example.net closing connection",
        ]
    );
}

#[tokio::test]
async fn bytes_after_starttls_are_refused_in_every_protocol() {
    for (mail, input, refusal) in [
        (
            Mail::Smtp,
            &b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n"[..],
            "554 5.5.0",
        ),
        (
            Mail::Imap,
            b"a1 STARTTLS\r\na2 LOGIN u p\r\n",
            "a1 BAD Data after STARTTLS",
        ),
        (Mail::Pop3, b"STLS\r\n\x16\x03\x01", "-ERR Data after STLS"),
    ] {
        let (r, out) = talk(mail, input).await;
        assert!(matches!(r, Err(PlainError::Pipelined)), "{mail:?}: {r:?}");
        assert!(out.contains(refusal), "{mail:?}: {out}");
        assert!(
            !out.contains("Ready") && !out.contains("Begin TLS"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn imap_capability_login_refused_then_starttls() {
    let (r, out) = talk(
        Mail::Imap,
        b"a1 CAPABILITY\r\na2 LOGIN alice secret\r\na3 SELECT INBOX\r\nnotag\r\na4 STARTTLS\r\n",
    )
    .await;
    assert_eq!(r.unwrap(), Plain::Upgrade);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mx.example.net ready",
            "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED",
            "a1 OK CAPABILITY completed",
            "a2 NO [PRIVACYREQUIRED] Use STARTTLS first",
            "a3 BAD Command not allowed before STARTTLS",
            "* BAD Missing or invalid tag or command",
            "a4 OK Begin TLS negotiation now",
        ]
    );
}

#[tokio::test]
async fn imap_logout_and_pop3_quit() {
    let (r, out) = talk(Mail::Imap, b"x LOGOUT\r\n").await;
    assert_eq!(r.unwrap(), Plain::Quit);
    assert!(out.ends_with("* BYE mx.example.net logging out\r\nx OK LOGOUT completed\r\n"));
    let (r, out) = talk(Mail::Pop3, b"CAPA\r\nUSER alice\r\nNOOP\r\nQUIT\r\n").await;
    assert_eq!(r.unwrap(), Plain::Quit);
    assert_eq!(
        out,
        "+OK mx.example.net POP3 ready\r\n+OK Capability list follows\r\nSTLS\r\n.\r\n\
         -ERR Use STLS first; no login in clear text\r\n+OK\r\n+OK mx.example.net signing off\r\n"
    );
}

#[tokio::test]
async fn limits_on_line_length_and_command_count() {
    let long = format!("EHLO {}\r\n", "a".repeat(600));
    let (r, out) = talk(Mail::Smtp, long.as_bytes()).await;
    assert!(matches!(r, Err(PlainError::LineTooLong(512))), "{r:?}");
    assert!(out.ends_with("500 5.5.2 Line too long\r\n"));
    // A line that never ends is cut at the limit too, without waiting for its end.
    let (r, _) = talk(Mail::Pop3, "X".repeat(2000).as_bytes()).await;
    assert!(matches!(r, Err(PlainError::LineTooLong(512))), "{r:?}");

    let many = "NOOP\r\n".repeat(MAX_COMMANDS + 1);
    let (r, out) = talk(Mail::Smtp, many.as_bytes()).await;
    assert!(matches!(r, Err(PlainError::TooManyCommands)), "{r:?}");
    assert!(out.ends_with("421 4.7.0 mx.example.net Too many commands before STARTTLS\r\n"));

    let (r, _) = talk(Mail::Imap, b"a1 NOOP\r\n").await;
    assert!(matches!(r, Err(PlainError::Closed)), "{r:?}");
}

#[tokio::test]
async fn backend_greetings_are_consumed_or_passed_on() {
    let limit = Duration::from_secs(1);
    let cases: [(Mail, &[u8], Greeting); 5] = [
        (
            Mail::Smtp,
            b"220-mx ESMTP\r\n220-more\r\n220 ready\r\n",
            Greeting::Welcome { rest: Vec::new() },
        ),
        (
            Mail::Smtp,
            b"554 5.3.2 go away\r\n",
            Greeting::Refused(b"554 5.3.2 go away\r\n".to_vec()),
        ),
        (
            Mail::Imap,
            b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\nextra",
            Greeting::Welcome {
                rest: b"extra".to_vec(),
            },
        ),
        (
            Mail::Imap,
            b"* BYE overloaded\r\n",
            Greeting::Refused(b"* BYE overloaded\r\n".to_vec()),
        ),
        (
            Mail::Pop3,
            b"+OK Dovecot ready.\r\n",
            Greeting::Welcome { rest: Vec::new() },
        ),
    ];
    for (mail, bytes, want) in cases {
        let mut reader = bytes;
        let got = consume_greeting(&mut reader, mail, limit).await.unwrap();
        assert_eq!(got, want, "{mail:?}");
    }
    let mut cut: &[u8] = b"220-only a continuation\r\n";
    assert!(consume_greeting(&mut cut, Mail::Smtp, limit).await.is_err());
}
