//! `mailfront check-config --config FILE`: the config as validated, then the judgement of
//! the store's own report (what `run` would load, by the same catalog): the server-wide
//! certificate, each entry refused or serving with problems, the files not used, and
//! the counts.

use std::io::Write;
use std::path::Path;

use super::{bracketed, print_unused};
use crate::certs::check::Severity;
use crate::certs::{Report, State};
use crate::config::Config;

/// Prints what the config says: its warnings and each listener.
pub fn print_config(path: &Path, config: &Config, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "config {}: ok", path.display())?;
    for warning in config.warnings() {
        writeln!(out, "  warning: {warning}")?;
    }
    for l in &config.listeners {
        let binds: Vec<String> = l.bind.iter().map(ToString::to_string).collect();
        let routes = match l.routes.len() {
            0 => String::new(),
            n => format!(" ({n} routes)"),
        };
        writeln!(
            out,
            "  listener {} ({}) on {} -> {}, idle {}{routes}",
            l.name,
            l.protocol.as_str(),
            binds.join(", "),
            l.backend,
            humantime::format_duration(l.idle_timeout),
        )?;
    }
    for h in &config.http {
        let binds: Vec<String> = h.bind.iter().map(ToString::to_string).collect();
        let rest = match &h.backend {
            Some(backend) => format!("-> {backend}"),
            None => "redirects to https".to_owned(),
        };
        writeln!(
            out,
            "  listener {} (http) on {}: ACME http-01, {rest}",
            h.name,
            binds.join(", ")
        )?;
    }
    if let Some(acme) = &config.acme {
        let mut names = Vec::new();
        if let Some(file) = &acme.names_file {
            names.push(format!("names_file {}", file.display()));
        }
        let routes = config.route_names().len();
        if routes > 0 {
            names.push(format!("{routes} route names"));
        }
        if let Some(ask) = &acme.ask {
            names.push(format!("ask {ask}"));
        }
        writeln!(
            out,
            "  acme {}: {}{}; state in {}; at most {} orders at once, {} an hour",
            acme.directory,
            names.join(", "),
            if acme.on_demand { "; on demand" } else { "" },
            acme.state_dir.display(),
            acme.max_concurrent_orders,
            acme.orders_per_hour,
        )?;
    }
    if let Some(o) = &config.onboarding {
        let mta_sts = match o.mta_sts {
            Some(mode) => format!("mta-sts.DOMAIN (mode {})", mode.as_str()),
            None => "no MTA-STS".into(),
        };
        let checks = match o.check_interval {
            Some(every) => format!(
                "DNS readiness checked every {} at {} domains a second",
                humantime::format_duration(every),
                o.checks_per_second
            ),
            None => "no DNS readiness checks".into(),
        };
        let addresses = match config.server.addresses.as_slice() {
            [] => format!("this host is what {} resolves to", config.server.name),
            a => format!(
                "this host is {}",
                a.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        writeln!(
            out,
            "  onboarding: autoconfig.DOMAIN, autodiscover.DOMAIN, {mta_sts} on the https \
             listeners; {checks}; {addresses}"
        )?;
    }
    Ok(())
}

/// Prints the judgement of the store's report.
pub fn print_store(config: &Config, report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let c = &config.certs;
    let spaced = |codes: &[&str]| {
        bracketed(codes)
            .map(|b| format!(" {b}"))
            .unwrap_or_default()
    };
    let fallback = &report.server_wide;
    match fallback.state {
        State::Absent => writeln!(
            out,
            "  server-wide certificate: none yet; `run` will generate a self-signed one for \
             {} at {} and {}",
            config.server.name,
            c.default_cert.display(),
            c.default_key.display()
        )?,
        state => writeln!(
            out,
            "  server-wide certificate {}: {} ({}){}",
            c.default_cert.display(),
            match state {
                State::ServingWithErrors => "serves with errors",
                _ => "ok",
            },
            fallback.names.join(", "),
            spaced(&fallback.codes)
        )?,
    }
    for row in &report.entries {
        let what = match row.state {
            State::Refused => "refused",
            State::ServingWithErrors => "serving with errors",
            _ if row.codes.is_empty() => continue,
            _ => "serving",
        };
        let reason = row.reason.as_deref().map(|r| format!(": {r}"));
        let (entry, codes) = (&row.entry, spaced(&row.codes));
        writeln!(out, "  {what} {entry}{codes}{}", reason.unwrap_or_default())?;
        for f in row
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
        {
            let (code, file) = (f.code.as_str(), f.file.display());
            writeln!(out, "    {code} {file}: {}", f.message)?;
        }
    }
    print_unused(report, out, "  ")?;
    match &report.unreadable {
        Some(reason) => writeln!(
            out,
            "  store {}: cannot be read ({reason}); only the server-wide certificate would serve",
            c.dir.display()
        ),
        None => writeln!(
            out,
            "  store {}: {} entries serve ({} with errors), {} superseded, {} refused",
            c.dir.display(),
            report.count(State::Serving) + report.count(State::ServingWithErrors),
            report.count(State::ServingWithErrors),
            report.count(State::Superseded),
            report.count(State::Refused),
        ),
    }
}
