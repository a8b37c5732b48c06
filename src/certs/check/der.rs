//! The few DER structures the checks take apart by hand: elements, the contents of a
//! `Name` and of a SubjectPublicKeyInfo, as webpki's trust anchors and CRLs hold them.

/// The contents of a SubjectPublicKeyInfo DER (what [`Crl::signed_by`] takes).
pub fn spki_contents(der: &[u8]) -> &[u8] {
    element(der).map_or(der, |(_, contents, _, _)| contents)
}

/// One DER element: its tag, its contents, the whole element, and what follows it.
pub type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// The DER element at the start of `input`. Single-byte tags and definite lengths, which
/// is all DER has for these structures.
pub fn element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, after_len) = after_tag.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, body) = (after_len.get(..n)?, after_len.get(n..)?);
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            body,
        )
    };
    let contents = body.get(..len)?;
    let whole_len = input.len() - body.len() + len;
    Some((tag, contents, &input[..whole_len], &body[len..]))
}

/// The contents of a DER `Name` (a SEQUENCE), as trust anchors store it.
pub fn name_contents(der: &[u8]) -> Option<&[u8]> {
    let (tag, contents, _, _) = element(der)?;
    (tag == 0x30).then_some(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_short_and_long() {
        let (tag, contents, whole, rest) = element(&[0x30, 2, 1, 2, 9]).unwrap();
        assert_eq!(
            (tag, contents, whole, rest),
            (0x30, &[1u8, 2][..], &[0x30u8, 2, 1, 2][..], &[9u8][..])
        );
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7, 0x100));
        let (_, contents, whole, rest) = element(&long).unwrap();
        assert_eq!((contents.len(), whole.len(), rest.len()), (0x100, 0x104, 0));
        assert!(element(&[0x30, 5, 1]).is_none());
        assert!(element(&[0x30, 0x80]).is_none());
    }

    #[test]
    fn name_contents_strips_the_sequence_header() {
        assert_eq!(name_contents(&[0x30, 2, 1, 2]), Some(&[1u8, 2][..]));
        let long: Vec<u8> = [0x30, 0x81, 0x80]
            .into_iter()
            .chain(std::iter::repeat_n(7, 0x80))
            .collect();
        assert_eq!(name_contents(&long).map(<[u8]>::len), Some(0x80));
        assert_eq!(name_contents(&[0x31, 0]), None);
        assert_eq!(name_contents(&[0x30, 5, 1]), None);
    }
}
