//! Sets of finding codes, small enough to keep with each of 100,000 entries: the errors a
//! certificate serves with ([`Problems`], one byte: kept with every serving version to
//! judge the next one by the store's rule and to rank them), and every code the checks
//! found in it ([`Codes`], two bytes, for the report).

use super::Code;

/// Every code the checks found in a certificate, in the catalogue's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Codes(u16);

impl Codes {
    const ALL: [Code; 16] = [
        Code::KeyMismatch,
        Code::NotOneLeaf,
        Code::ChainIncomplete,
        Code::NameMismatch,
        Code::WeakSignature,
        Code::WeakKey,
        Code::Expired,
        Code::NotYetValid,
        Code::Revoked,
        Code::SelfSigned,
        Code::UntrustedIssuer,
        Code::KeyPermissions,
        Code::ExpiresSoon,
        Code::BadCertificate,
        Code::PemRepaired,
        Code::RootInChain,
    ];

    /// The codes, in the catalogue's order.
    pub fn iter(self) -> impl Iterator<Item = Code> {
        members(&Self::ALL, self.0)
    }
}

impl FromIterator<Code> for Codes {
    fn from_iter<I: IntoIterator<Item = Code>>(codes: I) -> Self {
        let bit = |code| {
            Self::ALL
                .iter()
                .position(|c| *c == code)
                .map_or(0, |i| 1 << i)
        };
        Self(codes.into_iter().map(bit).fold(0, |a, b| a | b))
    }
}

/// A set of the errors a certificate serves with ([`Code::serves_anyway`], and `revoked`
/// for the server-wide certificate, which serves with it rather than stop the start), in
/// one byte: kept with every serving version to judge the next one and to rank them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Problems(u8);

impl Problems {
    const CODES: [Code; 6] = [
        Code::ChainIncomplete,
        Code::Expired,
        Code::NotYetValid,
        Code::WeakSignature,
        Code::NameMismatch,
        Code::Revoked,
    ];

    pub(super) fn bit(code: Code) -> Option<u8> {
        Self::CODES.iter().position(|c| *c == code).map(|i| 1 << i)
    }

    /// The set of `codes` that a certificate serves with.
    pub fn of(codes: impl IntoIterator<Item = Code>) -> Self {
        Self(
            codes
                .into_iter()
                .filter_map(Self::bit)
                .fold(0, |a, b| a | b),
        )
    }

    /// These problems, and those the dates give at `now`.
    pub fn at(self, not_before: i64, not_after: i64, now: i64) -> Self {
        let mut dated = self;
        if now > not_after {
            dated.0 |= Self::bit(Code::Expired).unwrap_or(0);
        } else if now < not_before {
            dated.0 |= Self::bit(Code::NotYetValid).unwrap_or(0);
        }
        dated
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every problem of `self` is also one of `other`.
    pub fn within(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether `self` is better than `other`: some of its problems and no other.
    pub fn fewer_than(self, other: Self) -> bool {
        self.within(other) && self != other
    }

    /// The codes, in the catalogue's order.
    pub fn codes(self) -> impl Iterator<Item = Code> {
        members(&Self::CODES, self.0.into())
    }
}

/// The codes of `all` whose bits are set in `bits` (bit `i` for `all[i]`).
fn members(all: &'static [Code], bits: u16) -> impl Iterator<Item = Code> {
    all.iter()
        .enumerate()
        .filter(move |(i, _)| bits & (1 << i) != 0)
        .map(|(_, c)| *c)
}
