//! Running as an unprivileged user: the listening sockets are bound first (ports below
//! 1024 need root or CAP_NET_BIND_SERVICE), then the process becomes `server.user`, with
//! that user's groups, before it reads a certificate or accepts a connection.
//!
//! Every later read of the store (reloads, rescans) is then done as that user, so the
//! certificates and keys must be readable by it; start-up reading them as the same user
//! makes a permission problem show at start rather than at the first renewal.

use std::ffi::CString;
use std::io;

/// Why the process cannot become the configured user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// No such user in the system's user database.
    #[error("server.user: no user named {0:?}")]
    NoSuchUser(String),
    /// Switching needs root (or CAP_SETUID and CAP_SETGID).
    #[error(
        "server.user = {user:?}: running as uid {uid}, which cannot switch users; start as \
         root (the listeners are bound first), or leave server.user out and start as that \
         user with CAP_NET_BIND_SERVICE"
    )]
    NotPermitted { user: String, uid: u32 },
    /// A system call failed.
    #[error("server.user = {user:?}: {call} failed: {error}")]
    Call {
        user: String,
        call: &'static str,
        error: io::Error,
    },
}

/// A user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub name: String,
    pub uid: u32,
    /// The user's primary group.
    pub gid: u32,
}

impl Account {
    /// Looks `name` up in the user database (`/etc/passwd`, NSS).
    pub fn lookup(name: &str) -> Result<Self, PrivilegeError> {
        let c_name = CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.to_owned()))?;
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: an all-zero passwd is a valid value of this plain C struct.
            let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the call: the name is NUL-terminated,
            // `buf` is writable for its length, `entry` and `found` are ours.
            let rc = unsafe {
                libc::getpwnam_r(
                    c_name.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut found,
                )
            };
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            if rc != 0 {
                return Err(PrivilegeError::Call {
                    user: name.to_owned(),
                    call: "getpwnam_r",
                    error: io::Error::from_raw_os_error(rc),
                });
            }
            if found.is_null() {
                return Err(PrivilegeError::NoSuchUser(name.to_owned()));
            }
            return Ok(Self {
                name: name.to_owned(),
                uid: entry.pw_uid,
                gid: entry.pw_gid,
            });
        }
    }
}

/// Makes the whole process (every thread) run as `account`, with its primary group and
/// the supplementary groups the group database gives it (`ssl-cert`, say), and checks
/// that root cannot be regained. Nothing to do when already running as that user.
pub fn become_user(account: &Account) -> Result<(), PrivilegeError> {
    // SAFETY: these calls take no pointers.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid == account.uid && euid == account.uid {
        return Ok(());
    }
    if euid != 0 {
        return Err(PrivilegeError::NotPermitted {
            user: account.name.clone(),
            uid: euid,
        });
    }
    let fail = |call: &'static str| PrivilegeError::Call {
        user: account.name.clone(),
        call,
        error: io::Error::last_os_error(),
    };
    let c_name = CString::new(account.name.as_str()).expect("looked up by this name");
    // glibc applies each of these to every thread of the process, as POSIX requires.
    // SAFETY: the name is NUL-terminated; the others take plain integers.
    unsafe {
        if libc::initgroups(c_name.as_ptr(), account.gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setgid(account.gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(account.uid) != 0 {
            return Err(fail("setuid"));
        }
        if libc::setuid(0) == 0 {
            return Err(PrivilegeError::Call {
                user: account.name.clone(),
                call: "setuid (root could be regained)",
                error: io::Error::other("setuid(0) succeeded after dropping"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_refuses_unknown_users() {
        let root = Account::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(matches!(
            Account::lookup("no-such-user-mailfront-test"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
        assert!(matches!(
            Account::lookup("bad\0name"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
    }

    #[test]
    fn becoming_oneself_is_nothing_to_do() {
        // SAFETY: takes no pointers.
        let uid = unsafe { libc::geteuid() };
        // The name is only used when switching, which does not happen here.
        let me = Account {
            name: "the current user".into(),
            uid,
            // SAFETY: takes no pointers.
            gid: unsafe { libc::getegid() },
        };
        become_user(&me).unwrap();
        // SAFETY: takes no pointers.
        assert_eq!(unsafe { libc::geteuid() }, uid);
    }
}
