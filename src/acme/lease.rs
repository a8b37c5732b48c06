//! One order per name across a fleet: a lock file with a lease in `state_dir/locks/`.
//!
//! The file says who holds it and until when: `TOKEN EXPIRES HOST PID`. It is created
//! exclusively; a lease that has run out, or whose holder was a process of this host that
//! is gone, is taken over by writing a claim over it and reading it back after a pause:
//! of several instances taking over at once, the last writer holds it and the others see
//! its claim. Orders are bounded well inside the lease, so a live holder never loses it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a lease lasts; orders are cut at [`ORDER_LIMIT`], well inside it.
pub const LEASE: Duration = Duration::from_secs(10 * 60);
/// The longest an order may run.
pub const ORDER_LIMIT: Duration = Duration::from_secs(5 * 60);
/// The pause between writing a takeover claim and reading it back.
const SETTLE: Duration = Duration::from_millis(300);

/// A held lock; released (removed, if still ours) when dropped.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    token: String,
}

/// Who holds a lock, as its file says.
#[derive(Debug, PartialEq, Eq)]
struct Claim {
    token: String,
    expires: i64,
    host: String,
    pid: u32,
}

impl Claim {
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        Some(Self {
            token: words.next()?.to_owned(),
            expires: words.next()?.parse().ok()?,
            host: words.next()?.to_owned(),
            pid: words.next()?.parse().ok()?,
        })
    }

    fn ours() -> Self {
        let mut token = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut token);
        Self {
            token: token.iter().map(|b| format!("{b:02x}")).collect(),
            expires: crate::certs::now() + LEASE.as_secs() as i64,
            host: host_name(),
            pid: std::process::id(),
        }
    }

    fn text(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.token, self.expires, self.host, self.pid
        )
    }

    /// Whether the holder can no longer be holding it.
    fn stale(&self, now: i64) -> bool {
        self.expires <= now || (self.host == host_name() && !process_alive(self.pid))
    }
}

/// Tries to take the lock `name` in `dir`: `None` while another live holder has it.
pub async fn acquire(dir: &Path, name: &str) -> io::Result<Option<Lease>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.lock"));
    let claim = Claim::ours();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(claim.text().as_bytes())?;
            file.sync_all()?;
            return Ok(Some(Lease {
                path,
                token: claim.token,
            }));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let held = std::fs::read_to_string(&path).ok();
    // A file being written (empty or partial) is a live claim.
    let stale = match held.as_deref().map(Claim::parse) {
        Some(Some(held)) => held.stale(crate::certs::now()),
        Some(None) => std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > LEASE),
        None => true,
    };
    if !stale {
        return Ok(None);
    }
    write_over(dir, &path, &claim.text())?;
    tokio::time::sleep(SETTLE).await;
    let now_held = std::fs::read_to_string(&path).ok();
    if now_held.as_deref().and_then(Claim::parse).map(|c| c.token) == Some(claim.token.clone()) {
        tracing::info!(lock = %path.display(), "took over a lock whose holder is gone");
        Ok(Some(Lease {
            path,
            token: claim.token,
        }))
    } else {
        Ok(None)
    }
}

impl Lease {
    /// Whether the file still names this holder.
    pub fn held(&self) -> bool {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| Claim::parse(&t))
            .is_some_and(|c| c.token == self.token)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.held() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn write_over(dir: &Path, path: &Path, text: &str) -> io::Result<()> {
    let mut file = tempfile::Builder::new().prefix(".claim").tempfile_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match rc {
        0 if end > 0 => String::from_utf8_lossy(&buf[..end])
            .split_whitespace()
            .next()
            .unwrap_or("localhost")
            .to_owned(),
        _ => "localhost".to_owned(),
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_dead_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "mail.example.com")
            .await
            .unwrap()
            .unwrap();
        assert!(acquire(dir.path(), "mail.example.com")
            .await
            .unwrap()
            .is_none());
        assert!(acquire(dir.path(), "other.example.com")
            .await
            .unwrap()
            .is_some());
        drop(first);
        let second = acquire(dir.path(), "mail.example.com")
            .await
            .unwrap()
            .unwrap();
        std::mem::forget(second);
        // A holder of this host that is gone: a pid no process has.
        let path = dir.path().join("dead.example.com.lock");
        let far = crate::certs::now() + 3600;
        std::fs::write(&path, format!("x {far} {} {}\n", host_name(), i32::MAX)).unwrap();
        assert!(acquire(dir.path(), "dead.example.com")
            .await
            .unwrap()
            .is_some());
        // Another host's holder whose lease ran out.
        let path = dir.path().join("late.example.com.lock");
        std::fs::write(&path, "x 1 elsewhere 1\n").unwrap();
        let late = acquire(dir.path(), "late.example.com")
            .await
            .unwrap()
            .unwrap();
        assert!(late.held());
        // Another host's live holder.
        std::fs::write(
            dir.path().join("live.example.com.lock"),
            format!("x {far} elsewhere 1\n"),
        )
        .unwrap();
        assert!(acquire(dir.path(), "live.example.com")
            .await
            .unwrap()
            .is_none());
    }
}
