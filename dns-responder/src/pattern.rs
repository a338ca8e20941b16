//! Domain name patterns as DNSChaos writes them: `?` stands for one character, `*` for any run
//! of characters (dots included), everything else matches itself, case-insensitively. Chaos Mesh
//! accepts `*` only at the end (`github.*`); a leading `*.example.com` is accepted here too.

use std::fmt;

use crate::spec::SpecError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainPattern {
    /// Lower case, without a trailing dot.
    text: String,
}

impl DomainPattern {
    /// Validates a pattern: not empty, at most 253 characters, letters, digits, `-`, `_`, `.`,
    /// `*` and `?` only.
    pub fn parse(index: usize, raw: &str) -> Result<Self, SpecError> {
        let bad = |reason: String| SpecError::Pattern {
            index,
            pattern: raw.to_owned(),
            reason,
        };
        let text = raw.trim_end_matches('.').to_ascii_lowercase();
        if text.is_empty() {
            return Err(bad("empty".into()));
        }
        if text.len() > 253 {
            return Err(bad(format!(
                "{} characters, a domain name has at most 253",
                text.len()
            )));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?')))
        {
            return Err(bad(format!(
                "{c:?} is not allowed: letters, digits, '-', '_', '.', '*' and '?' only"
            )));
        }
        Ok(Self { text })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` (any case, with or without the trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        glob_match(self.text.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Iterative wildcard matching with one backtrack point (the last `*`): linear in practice.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> DomainPattern {
        DomainPattern::parse(0, p).unwrap()
    }

    /// Chaos Mesh's DNSChaos example: ["google.com", "github.*", "chaos-mes?.org"] takes effect
    /// on google.com, github.com and chaos-mesh.org.
    #[test]
    fn chaos_mesh_examples_match() {
        assert!(pattern("google.com").matches("google.com."));
        assert!(pattern("github.*").matches("github.com"));
        assert!(pattern("chaos-mes?.org").matches("chaos-mesh.org"));
        assert!(!pattern("google.com").matches("www.google.com"));
        assert!(!pattern("chaos-mes?.org").matches("chaos-mes.org"));
    }

    #[test]
    fn a_leading_star_covers_every_subdomain_but_not_the_apex() {
        let p = pattern("*.Example.COM.");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("A.b.EXAMPLE.com."));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("example.org"));
        assert!(!p.matches("a.example.com.evil"));
        assert!(pattern("*").matches("anything.at.all"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for (raw, says) in [
            ("", "empty"),
            (".", "empty"),
            ("a b.com", "' '"),
            ("a/b", "'/'"),
        ] {
            let err = DomainPattern::parse(3, raw).unwrap_err().to_string();
            assert!(err.starts_with("patterns[3]"), "{err}");
            assert!(err.contains(says), "{raw:?}: {err}");
        }
        let long = "a".repeat(254);
        assert!(DomainPattern::parse(0, &long).is_err());
    }
}
