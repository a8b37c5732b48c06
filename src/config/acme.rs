//! `[acme]`: where certificates are ordered, which names may be, and the limits that keep
//! an account below its CA's rate limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::durations::{duration, ASK_NEGATIVE_TTL, ASK_TTL, RETRY_MAX, RETRY_MIN};
use super::raw::RawAcme;
use super::{ConfigError, Context};

/// The key of an ordered certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    Rsa2048,
}

/// `[acme]`, validated.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's RFC 8555 directory URL.
    pub directory: String,
    /// `mailto:` addresses given to the CA.
    pub contact: Vec<String>,
    /// Account key, locks and pending challenges; instances of a fleet share it.
    pub state_dir: PathBuf,
    /// Allowed names, one per line, watched.
    pub names_file: Option<PathBuf>,
    /// URL prefix the name is appended to; 200 means allowed.
    pub ask: Option<String>,
    /// How long an `ask` answer of "allowed" is believed.
    pub ask_ttl: Duration,
    /// How long an `ask` answer of "not allowed" is believed.
    pub ask_negative_ttl: Duration,
    /// Order at the first handshake for an allowed name without a certificate.
    pub on_demand: bool,
    /// The key of ordered certificates.
    pub key_type: KeyType,
    /// External Account Binding: key id and the file holding the base64url HMAC key.
    pub eab: Option<(String, PathBuf)>,
    /// Roots for the ACME API's own certificate (the system's when not set).
    pub ca_bundle: Option<PathBuf>,
    /// The CA's certificate profile (draft-aaron-acme-profiles), when set.
    pub profile: Option<String>,
    /// Orders running at once.
    pub max_concurrent_orders: usize,
    /// New orders started in any hour (Let's Encrypt allows 300 per 3 hours).
    pub orders_per_hour: u32,
    /// Failed orders for one name in any hour before it waits for the hour to pass (Let's
    /// Encrypt allows 5 failed validations per name per hour).
    pub failures_per_name_per_hour: u32,
    /// The first wait after a failed order for a name; doubled at each failure.
    pub retry_min: Duration,
    /// The longest wait between attempts for one name.
    pub retry_max: Duration,
}

pub(super) fn acme_settings(
    cx: &Context<'_>,
    base: &Path,
    raw: RawAcme,
) -> Result<AcmeSettings, ConfigError> {
    let directory = raw.directory.get_ref().trim().to_owned();
    if !(directory.starts_with("https://") || directory.starts_with("http://")) {
        return Err(cx.invalid(
            &raw.directory,
            "acme.directory",
            "must be the CA's directory URL (https://...), such as \
             https://acme-v02.api.letsencrypt.org/directory",
        ));
    }
    let mut contact = Vec::with_capacity(raw.contact.len());
    for c in &raw.contact {
        let text = c.get_ref().trim();
        let ok = text
            .strip_prefix("mailto:")
            .is_some_and(|a| a.contains('@') && !a.contains(char::is_whitespace));
        if !ok {
            return Err(cx.invalid(
                c,
                "acme.contact",
                format!(
                    "{text:?} is not a mailto: address (write \"mailto:hostmaster@example.com\")"
                ),
            ));
        }
        contact.push(text.to_owned());
    }
    let path = |s: &toml::Spanned<String>, key: &str| -> Result<PathBuf, ConfigError> {
        match s.get_ref().trim() {
            "" => Err(cx.invalid(s, key, "must name a file or directory")),
            p => Ok(base.join(p)),
        }
    };
    let state_dir = path(&raw.state_dir, "acme.state_dir")?;
    let names_file = raw
        .names_file
        .as_ref()
        .map(|n| path(n, "acme.names_file"))
        .transpose()?;
    let ask = match &raw.ask {
        Some(a) => {
            let text = a.get_ref().trim();
            if !(text.starts_with("http://") || text.starts_with("https://")) {
                return Err(cx.invalid(
                    a,
                    "acme.ask",
                    "must be a URL the name is appended to, such as \
                     \"http://127.0.0.1:8080/allowed?domain=\"",
                ));
            }
            Some(text.to_owned())
        }
        None => None,
    };
    let key_type = match raw.key_type.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("ecdsa-p256") => KeyType::EcdsaP256,
        Some("rsa2048") => KeyType::Rsa2048,
        Some(other) => {
            return Err(cx.invalid(
                raw.key_type.as_ref().unwrap(),
                "acme.key_type",
                format!("{other:?} is not a key type (write \"ecdsa-p256\" or \"rsa2048\")"),
            ))
        }
    };
    let eab = match (&raw.eab_kid, &raw.eab_hmac_key_file) {
        (None, None) => None,
        (Some(kid), Some(file)) => Some((
            kid.get_ref().trim().to_owned(),
            path(file, "acme.eab_hmac_key_file")?,
        )),
        (Some(kid), None) => {
            return Err(cx.invalid(kid, "acme.eab_kid", "needs acme.eab_hmac_key_file too"))
        }
        (None, Some(file)) => {
            return Err(cx.invalid(file, "acme.eab_hmac_key_file", "needs acme.eab_kid too"))
        }
    };
    let profile = match &raw.profile {
        Some(p) if p.get_ref().trim().is_empty() => {
            return Err(cx.invalid(p, "acme.profile", "must name a profile"))
        }
        Some(p) => Some(p.get_ref().trim().to_owned()),
        None => None,
    };
    let count = |v: &Option<toml::Spanned<u32>>, key: &str, max: u32, default: u32| match v {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > max => {
            Err(cx.invalid(n, key, format!("must be between 1 and {max}")))
        }
        Some(n) => Ok(*n.get_ref()),
        None => Ok(default),
    };
    let max_concurrent_orders = count(
        &raw.max_concurrent_orders,
        "acme.max_concurrent_orders",
        64,
        4,
    )? as usize;
    let orders_per_hour = count(&raw.orders_per_hour, "acme.orders_per_hour", 100_000, 90)?;
    let failures_per_name_per_hour = count(
        &raw.failures_per_name_per_hour,
        "acme.failures_per_name_per_hour",
        100,
        3,
    )?;
    let retry_min = duration(cx, raw.retry_min, &RETRY_MIN)?.unwrap_or(Duration::from_secs(60));
    let retry_max_span = raw.retry_max.as_ref().map(|r| r.span());
    let retry_max =
        duration(cx, raw.retry_max, &RETRY_MAX)?.unwrap_or(Duration::from_secs(6 * 3600));
    if retry_max < retry_min {
        let span = toml::Spanned::new(retry_max_span.unwrap_or(raw.state_dir.span()), ());
        return Err(cx.invalid(&span, "acme.retry_max", "must not be below acme.retry_min"));
    }
    Ok(AcmeSettings {
        directory,
        contact,
        state_dir,
        names_file,
        ask,
        ask_ttl: duration(cx, raw.ask_ttl, &ASK_TTL)?.unwrap_or(Duration::from_secs(3600)),
        ask_negative_ttl: duration(cx, raw.ask_negative_ttl, &ASK_NEGATIVE_TTL)?
            .unwrap_or(Duration::from_secs(600)),
        on_demand: raw.on_demand,
        key_type,
        eab,
        ca_bundle: raw.ca_bundle.map(|p| base.join(p)),
        profile,
        max_concurrent_orders,
        orders_per_hour,
        failures_per_name_per_hour,
        retry_min,
        retry_max,
    })
}
