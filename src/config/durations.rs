//! Duration keys: humantime text, and the range each key accepts, checked with the key and
//! line of the value (a century overflowed every connection's clock arithmetic, and zero
//! closed every session at once).

use std::time::Duration;

use toml::Spanned;

use super::raw::HumanDuration;
use super::{ConfigError, Context};

/// The values a duration key accepts, both ends included. Each bound is what still makes
/// sense to an operator: zero would close every session or handshake at once, and a
/// century overflows the clock arithmetic of every connection.
pub(super) struct Range {
    key: &'static str,
    min: Duration,
    max: Duration,
}

pub(super) const HANDSHAKE: Range = Range {
    key: "server.handshake_timeout",
    min: Duration::from_secs(1),
    max: Duration::from_secs(10 * 60),
};
pub(super) const CONNECT: Range = Range {
    key: "server.connect_timeout",
    min: Duration::from_millis(100),
    max: Duration::from_secs(5 * 60),
};
pub(super) const IDLE: Range = Range {
    key: "server.idle_timeout",
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 24 * 3600),
};
pub(super) const LISTENER_IDLE: Range = Range {
    key: "listener.idle_timeout",
    ..IDLE
};
/// Zero is allowed: open connections are cut at once on SIGTERM.
pub(super) const DRAIN: Range = Range {
    key: "server.drain_timeout",
    min: Duration::ZERO,
    max: Duration::from_secs(3600),
};
pub(super) const RESCAN: Range = Range {
    key: "certs.rescan_interval",
    min: Duration::from_secs(1),
    max: Duration::from_secs(24 * 3600),
};

/// The duration of `raw` when it lies in `range`; the key and line otherwise.
pub(super) fn duration(
    cx: &Context<'_>,
    raw: Option<Spanned<HumanDuration>>,
    range: &Range,
) -> Result<Option<Duration>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let value = raw.get_ref().0;
    if value < range.min || value > range.max {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        let message = format!(
            "{} is out of range: write a duration from {} to {}",
            show(value),
            show(range.min),
            show(range.max)
        );
        return Err(cx.invalid(&raw, range.key, message));
    }
    Ok(Some(value))
}

pub(super) const ASK_TTL: Range = Range {
    key: "acme.ask_ttl",
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 24 * 3600),
};
pub(super) const ASK_NEGATIVE_TTL: Range = Range {
    key: "acme.ask_negative_ttl",
    ..ASK_TTL
};
pub(super) const RETRY_MIN: Range = Range {
    key: "acme.retry_min",
    min: Duration::from_secs(1),
    max: Duration::from_secs(24 * 3600),
};
pub(super) const RETRY_MAX: Range = Range {
    key: "acme.retry_max",
    min: Duration::from_secs(1),
    max: Duration::from_secs(7 * 24 * 3600),
};
pub(super) const MTA_STS_MAX_AGE: Range = Range {
    key: "onboarding.mta_sts_max_age",
    // RFC 8461 §3.2: at most 31557600 seconds (a year); a day at least, or senders keep
    // asking for the policy all the time.
    min: Duration::from_secs(24 * 3600),
    max: Duration::from_secs(31_557_600),
};
/// Zero turns the running proxy's checks off.
pub(super) const CHECK_INTERVAL: Range = Range {
    key: "onboarding.check_interval",
    min: Duration::ZERO,
    max: Duration::from_secs(30 * 24 * 3600),
};
