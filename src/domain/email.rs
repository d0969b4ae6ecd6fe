//! E-mail addresses as api.md §0.2 accepts them.

use std::fmt;

/// A syntactically valid, trimmed e-mail address, kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid e-mail address")]
pub struct InvalidEmail;

impl EmailAddress {
    /// Trims, then requires exactly one `@`, a local part of 1..=64 characters, and a domain
    /// with at least one dot made of valid DNS labels (an IDN is accepted); 255 characters at
    /// most in all.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let s = raw.trim();
        if s.chars().count() > 255 {
            return Err(InvalidEmail);
        }
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(InvalidEmail);
        };
        let local_len = local.chars().count();
        if local_len == 0
            || local_len > 64
            || local.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InvalidEmail);
        }
        if !valid_domain(domain) {
            return Err(InvalidEmail);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address with its domain part lower-cased (institution, invite and lab e-mails).
    pub fn with_lowercase_domain(&self) -> String {
        match self.0.rsplit_once('@') {
            Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
            None => self.0.clone(),
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_domain(domain: &str) -> bool {
    // IDNs are checked in their ASCII (punycode) form.
    let Ok(ascii) = idna::domain_to_ascii(domain) else {
        return false;
    };
    if ascii.is_empty() || ascii.len() > 253 || !ascii.contains('.') {
        return false;
    }
    ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_international_addresses() {
        for ok in [
            "ada@uni.org",
            "  Ada.Lovelace+cs@Uni.Example.ORG ",
            "x@bücher.de",
            "a@b.co",
        ] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@uni.org",
            "a@b@uni.org",
            "ada@localhost",
            "ada@-uni.org",
            "ada@uni..org",
            "a b@uni.org",
            &format!("{}@uni.org", "a".repeat(65)),
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_domain_is_lower_cased() {
        let e = EmailAddress::parse("Contact@INSTITUTION.org").unwrap();
        assert_eq!(e.with_lowercase_domain(), "Contact@institution.org");
        assert_eq!(e.as_str(), "Contact@INSTITUTION.org");
    }
}
