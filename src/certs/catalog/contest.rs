//! What the store's writers ask of the catalog before they write: who would serve a name
//! if a version were installed ([`Catalog::contest`]), which entries and stray files there
//! are (ownership), the trust the checks judge by; and the ranking of one name's
//! candidates that the index and the contest share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::SignatureAlgorithm;

use super::{discover, rule, Catalog};
use crate::certs::check;
use crate::certs::index::{rank, Conflict, Index, Match, Served};
use crate::certs::load::{Context, Loaded};
use crate::certs::store::CLIENTS;
use crate::names::Pattern;

impl Catalog {
    /// One name's candidates best first, as the index holds them: `list` (the versions
    /// that claim it) and, for one of the server's `own` names, the server-wide
    /// certificate when it outranks every version in `list` (one with errors, or an
    /// untrusted one beside a trusted server-wide certificate).
    pub(super) fn ranked(
        &self,
        name: &Pattern,
        mut list: Vec<Arc<Served>>,
        own: bool,
        now: i64,
        conflicts: &mut Vec<Conflict>,
    ) -> Vec<Arc<Served>> {
        let fallback = &self.fallback().served;
        let server_wide = fallback.standing_at(now);
        let outranked = |s: &Arc<Served>| server_wide.better_than(s.standing_at(now)).is_some();
        if own && list.iter().all(outranked) {
            list.push(Arc::clone(fallback));
        }
        rank(name, &mut list, conflicts, now);
        list
    }

    /// Who would serve handshakes for `name` if `new` took the place of entry `id`'s
    /// version (or joined the store as entry `id`): `Ok` when `new` would serve some
    /// client (one that takes ECDSA, or one that takes only RSA) and the store's rule
    /// would load it, else the version that serves instead, and how it matches `name`.
    /// The index's own lookup decides, on the candidates of `name` and of its wildcard.
    pub fn contest(&self, id: &str, new: &Loaded, name: &str) -> Result<(), (Arc<Served>, Match)> {
        let now = check::now();
        let Ok(exact) = Pattern::parse(name) else {
            return Ok(());
        };
        let parent = exact.wildcard();
        let patterns: Vec<Pattern> = std::iter::once(exact).chain(parent).collect();
        let fallback = Arc::clone(&self.fallback().served);
        let how = |winner: &Arc<Served>| {
            if Arc::ptr_eq(winner, &fallback) {
                return Match::Fallback;
            }
            let exact = self.claims.get(&patterns[0]).into_iter().flatten();
            match exact.into_iter().any(|s| Arc::ptr_eq(s, winner)) {
                true => Match::Exact,
                false => Match::Wildcard,
            }
        };
        // The store's rule: one that outranks it serves its names (and keeps them). Asked
        // of the claims of its names and their wildcards, without entry `id`'s own.
        let mut relevant: HashMap<Pattern, Vec<Arc<Served>>> = HashMap::new();
        for pattern in new
            .names
            .iter()
            .flat_map(|n| std::iter::once(n.clone()).chain(n.wildcard()))
        {
            if let Some(list) = self.claims.get(&pattern) {
                let list = list.iter().filter(|s| &*s.id != id).cloned().collect();
                relevant.insert(pattern, list);
            }
        }
        let refused = rule::worse(&relevant, self.fallback(), new, now);
        let mut updates = Vec::new();
        for pattern in patterns.iter().cloned() {
            let claimed = self.claims.get(&pattern).into_iter().flatten();
            let mut list: Vec<Arc<Served>> = claimed.filter(|s| &*s.id != id).cloned().collect();
            if new.names.contains(&pattern) {
                list.push(Arc::clone(&new.served));
            }
            let own = self.fallback().names.contains(&pattern);
            let list = self.ranked(&pattern, list, own, now, &mut Vec::new());
            updates.push((pattern, list));
        }
        let index =
            Index::empty(Arc::clone(&fallback)).with_updates(Arc::clone(&fallback), 0, updates);
        let served = CLIENTS.map(|schemes| index.select(Some(name), schemes));
        // The client `new` was meant for: an RSA certificate's is the RSA-only one.
        let (meant, how_meant) =
            served[usize::from(new.served.algorithm == SignatureAlgorithm::RSA)];
        match refused {
            // Named by what serves that client, unless only an exact name's lookup would
            // have preferred `new` (the wildcard that outranks it is named then).
            Some((better, _)) if Arc::ptr_eq(meant, &new.served) => {
                Err((Arc::clone(&better), how(&better)))
            }
            Some(_) => Err((Arc::clone(meant), how_meant)),
            None if served.iter().any(|(s, _)| Arc::ptr_eq(s, &new.served)) => Ok(()),
            None => Err((Arc::clone(meant), how_meant)),
        }
    }

    /// The loader's context: the provider, and the trust the checks judge chains by (the
    /// store's one trust load, which also checks what is installed).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The files found not to be entries whose path, below the store, has a part named
    /// `name` (`name/`, `name.pfx`, `live/name/cert.pem`).
    pub fn strays_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Path> {
        self.strays
            .keys()
            .map(PathBuf::as_path)
            .filter(move |path| {
                let rel = path.strip_prefix(&self.root).unwrap_or(path);
                rel.components().any(|c| {
                    let part = c.as_os_str().to_string_lossy();
                    part == name || discover::stem_of(&part) == Some(name)
                })
            })
    }

    /// The ids of every entry known, serving or refused.
    pub fn ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.keys()
    }

    /// The leaf of the version entry `id` serves, when it serves.
    pub fn serving_leaf(&self, id: &str) -> Option<&[u8]> {
        let loaded = self.entries.get(id)?.serving.as_ref()?;
        loaded.certified.cert.first().map(|der| der.as_ref())
    }
}
