//! STARTTLS listeners: mailfront speaks the plain-text start of an SMTP (RFC 5321/3207),
//! IMAP (RFC 9051/3501) or POP3 (RFC 1939/2595) session itself, up to the client's
//! STARTTLS; the TLS handshake then picks the certificate by SNI like on the implicit-TLS
//! ports, and only after it is the backend connected, its own greeting consumed, and the
//! rest relayed, so that the client sees one coherent session.
//!
//! Before TLS: bounded lines and a bounded number of commands, no login of any kind, and
//! bytes sent after the STARTTLS command and before the reply (the command-injection
//! pattern of CVE-2011-0411) refuse the connection rather than being carried into TLS.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Mail;

/// Commands a client may send before STARTTLS.
pub const MAX_COMMANDS: usize = 16;

/// How the plain-text part ended well.
#[derive(Debug, PartialEq, Eq)]
pub enum Plain {
    /// The client asked for TLS and was told to begin.
    Upgrade,
    /// The client quit.
    Quit,
}

/// How it ended badly (after the client was told, where it could be).
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    #[error("client closed before STARTTLS")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("a command line longer than {0} bytes before STARTTLS")]
    LineTooLong(usize),
    #[error("more than {MAX_COMMANDS} commands before STARTTLS")]
    TooManyCommands,
    #[error("bytes sent after STARTTLS before the reply (command injection refused)")]
    Pipelined,
}

impl PlainError {
    /// The `outcome` field of the connection's log line.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Closed => "client-closed",
            Self::Io(_) => "client-error",
            Self::LineTooLong(_) | Self::TooManyCommands => "starttls-limit",
            Self::Pipelined => "starttls-injection",
        }
    }
}

/// The longest command line accepted before TLS, CRLF included (RFC 5321 allows 512 for
/// SMTP commands; POP3's RFC 2449 255; nothing an IMAP client sends before TLS comes
/// near 1024).
fn max_line(mail: Mail) -> usize {
    match mail {
        Mail::Smtp | Mail::Pop3 => 512,
        Mail::Imap => 1024,
    }
}

/// What to do after replying to one command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Upgrade,
    Close,
}

/// Runs the plain-text part on `stream` until the client asks for TLS, quits, or breaks a
/// rule. `name` is the host name in the greeting.
pub async fn negotiate<S>(stream: &mut S, mail: Mail, name: &str) -> Result<Plain, PlainError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(greeting(mail, name).as_bytes()).await?;
    let limit = max_line(mail);
    let mut buf: Vec<u8> = Vec::with_capacity(limit);
    let mut commands = 0;
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if line.len() > limit {
                stream.write_all(line_too_long(mail).as_bytes()).await?;
                return Err(PlainError::LineTooLong(limit));
            }
            commands += 1;
            if commands > MAX_COMMANDS {
                stream.write_all(too_many(mail, name).as_bytes()).await?;
                return Err(PlainError::TooManyCommands);
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (reply, next) = answer(mail, name, text);
            if next == Next::Upgrade && !buf.is_empty() {
                let refusal = injected(mail, text);
                stream.write_all(refusal.as_bytes()).await?;
                return Err(PlainError::Pipelined);
            }
            stream.write_all(reply.as_bytes()).await?;
            match next {
                Next::Continue => {}
                Next::Upgrade => return Ok(Plain::Upgrade),
                Next::Close => return Ok(Plain::Quit),
            }
        }
        if buf.len() > limit {
            stream.write_all(line_too_long(mail).as_bytes()).await?;
            return Err(PlainError::LineTooLong(limit));
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(PlainError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn greeting(mail: Mail, name: &str) -> String {
    match mail {
        Mail::Smtp => format!("220 {name} ESMTP\r\n"),
        Mail::Imap => {
            format!("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] {name} ready\r\n")
        }
        Mail::Pop3 => format!("+OK {name} POP3 ready\r\n"),
    }
}

fn answer(mail: Mail, name: &str, line: &str) -> (String, Next) {
    match mail {
        Mail::Smtp => smtp(name, line),
        Mail::Imap => imap(name, line),
        Mail::Pop3 => pop3(name, line),
    }
}

fn smtp(name: &str, line: &str) -> (String, Next) {
    let (verb, arg) = split(line);
    let arg = arg.trim();
    let reply = |text: &str| (format!("{text}\r\n"), Next::Continue);
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" if arg.is_empty() => reply("501 5.5.4 Syntax: EHLO hostname"),
        "EHLO" => (
            format!("250-{name}\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"),
            Next::Continue,
        ),
        "HELO" if arg.is_empty() => reply("501 5.5.4 Syntax: HELO hostname"),
        "HELO" => (format!("250 {name}\r\n"), Next::Continue),
        "STARTTLS" if !arg.is_empty() => reply("501 5.5.4 Syntax: STARTTLS"),
        "STARTTLS" => ("220 2.0.0 Ready to start TLS\r\n".into(), Next::Upgrade),
        "NOOP" | "RSET" => reply("250 2.0.0 OK"),
        "QUIT" => (
            format!("221 2.0.0 {name} closing connection\r\n"),
            Next::Close,
        ),
        "AUTH" | "MAIL" | "RCPT" | "DATA" | "BDAT" | "VRFY" | "EXPN" | "ETRN" | "HELP" => {
            reply("530 5.7.0 Must issue a STARTTLS command first")
        }
        _ => reply("500 5.5.2 Command not recognized"),
    }
}

fn imap(name: &str, line: &str) -> (String, Next) {
    let (tag, rest) = split(line);
    let (command, _) = split(rest.trim_start());
    if tag.is_empty() || command.is_empty() || !valid_tag(tag) {
        return (
            "* BAD Missing or invalid tag or command\r\n".into(),
            Next::Continue,
        );
    }
    let tagged = |text: &str| (format!("{tag} {text}\r\n"), Next::Continue);
    match command.to_ascii_uppercase().as_str() {
        "CAPABILITY" => (
            format!(
                "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{tag} OK CAPABILITY completed\r\n"
            ),
            Next::Continue,
        ),
        "NOOP" => tagged("OK NOOP completed"),
        "LOGOUT" => (
            format!("* BYE {name} logging out\r\n{tag} OK LOGOUT completed\r\n"),
            Next::Close,
        ),
        "STARTTLS" => (
            format!("{tag} OK Begin TLS negotiation now\r\n"),
            Next::Upgrade,
        ),
        "LOGIN" | "AUTHENTICATE" => tagged("NO [PRIVACYREQUIRED] Use STARTTLS first"),
        _ => tagged("BAD Command not allowed before STARTTLS"),
    }
}

/// IMAP tags are atoms without `+` (RFC 9051's tag rule).
fn valid_tag(tag: &str) -> bool {
    tag.bytes().all(|b| {
        b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
    })
}

fn pop3(name: &str, line: &str) -> (String, Next) {
    let (verb, _) = split(line);
    let reply = |text: &str| (format!("{text}\r\n"), Next::Continue);
    match verb.to_ascii_uppercase().as_str() {
        "CAPA" => reply("+OK Capability list follows\r\nSTLS\r\n."),
        "STLS" => ("+OK Begin TLS negotiation\r\n".into(), Next::Upgrade),
        "NOOP" | "RSET" => reply("+OK"),
        "QUIT" => (format!("+OK {name} signing off\r\n"), Next::Close),
        "USER" | "PASS" | "APOP" | "AUTH" => reply("-ERR Use STLS first; no login in clear text"),
        _ => reply("-ERR Command not recognized before STLS"),
    }
}

/// The first word and the rest.
fn split(line: &str) -> (&str, &str) {
    line.split_once(' ').unwrap_or((line, ""))
}

fn line_too_long(mail: Mail) -> &'static str {
    match mail {
        Mail::Smtp => "500 5.5.2 Line too long\r\n",
        Mail::Imap => "* BYE Line too long\r\n",
        Mail::Pop3 => "-ERR Line too long\r\n",
    }
}

fn too_many(mail: Mail, name: &str) -> String {
    match mail {
        Mail::Smtp => format!("421 4.7.0 {name} Too many commands before STARTTLS\r\n"),
        Mail::Imap => "* BYE Too many commands before STARTTLS\r\n".into(),
        Mail::Pop3 => "-ERR Too many commands before STLS\r\n".into(),
    }
}

/// The reply that refuses a STARTTLS followed by more bytes.
fn injected(mail: Mail, line: &str) -> String {
    match mail {
        Mail::Smtp => "554 5.5.0 Data after STARTTLS refused\r\n".into(),
        Mail::Imap => format!("{} BAD Data after STARTTLS refused\r\n", split(line).0),
        Mail::Pop3 => "-ERR Data after STLS refused\r\n".into(),
    }
}

/// The backend's greeting, read and kept from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Greeting {
    /// A welcome; `rest` is whatever the backend sent after it (normally nothing: it
    /// waits for the client), to be passed on.
    Welcome { rest: Vec<u8> },
    /// A refusal (an SMTP 4xx/5xx, an IMAP BYE, a POP3 -ERR), to be passed on to the
    /// client before closing.
    Refused(Vec<u8>),
}

/// Reads the backend's greeting, which the client must not see: it already had
/// mailfront's.
pub async fn consume_greeting<S>(
    backend: &mut S,
    mail: Mail,
    limit: Duration,
) -> io::Result<Greeting>
where
    S: AsyncRead + Unpin,
{
    const MAX: usize = 8192;
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            if let Some(end) = greeting_end(mail, &buf) {
                let rest = buf.split_off(end);
                return Ok((buf, rest));
            }
            if buf.len() > MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend greeting longer than 8 KiB",
                ));
            }
            let n = backend.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed before its greeting",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (greeting, rest) = tokio::time::timeout(limit, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "backend sent no greeting"))??;
    let welcome = match mail {
        Mail::Smtp => greeting.first() == Some(&b'2'),
        Mail::Imap => greeting.starts_with(b"* OK") || greeting.starts_with(b"* PREAUTH"),
        Mail::Pop3 => greeting.starts_with(b"+OK"),
    };
    Ok(if welcome {
        Greeting::Welcome { rest }
    } else {
        Greeting::Refused(greeting)
    })
}

/// Where a whole greeting ends in `buf`, if it holds one: after the first line for IMAP
/// and POP3; for SMTP after the first line whose code is followed by a space, not a
/// hyphen (the last line of a multi-line reply).
fn greeting_end(mail: Mail, buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let end = start + nl + 1;
        let line = &buf[start..end];
        let last = match mail {
            Mail::Imap | Mail::Pop3 => true,
            Mail::Smtp => line.len() < 4 || line[3] != b'-',
        };
        if last {
            return Some(end);
        }
        start = end;
    }
    None
}

#[cfg(test)]
mod tests;
