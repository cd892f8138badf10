//! Image references as users type them (`myapp:v1.0`, `team/app@sha256:…`,
//! `docker.io/library/busybox:latest`) and as the registry layout stores them.

use crate::model::digest::Digest;
use std::fmt;

/// A repository name plus a tag and/or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Repository path inside the store (no registry host), e.g. `team/app`.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

fn invalid(s: &str, why: &'static str) -> ReferenceError {
    ReferenceError::Invalid(s.to_string(), why)
}

/// Repository path components: lowercase alphanumerics joined by `.`, `_`, `__` or `-` runs.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

pub fn validate_name(name: &str) -> Result<(), ReferenceError> {
    if name.is_empty() || name.len() > 255 {
        return Err(invalid(name, "repository name must be 1 to 255 characters"));
    }
    if !name.split('/').all(valid_component) {
        return Err(invalid(
            name,
            "repository name components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
        ));
    }
    Ok(())
}

/// Whether the first component of a reference is a registry host (as docker decides).
fn looks_like_host(h: &str) -> bool {
    (h.contains('.') || h.contains(':') || h == "localhost")
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        && !h.starts_with(['.', '-', ':'])
}

impl Reference {
    /// Parses `[host/]name[:tag][@sha256:hex]`. The registry host, if any, is dropped:
    /// the store holds repositories by path only, as a registry does.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| invalid(s, "the digest must be sha256:<64 hex>"))?,
                ),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag (a ':' before it belongs to a host:port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(invalid(
                    s,
                    "tags are up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let mut host = None;
        if parts.len() > 1 && looks_like_host(parts[0]) {
            host = Some(parts.remove(0));
        }
        if matches!(host, Some("docker.io") | Some("index.docker.io"))
            && parts.len() > 1
            && parts[0] == "library"
        {
            parts.remove(0);
        }
        let name = parts.join("/");
        if name.is_empty() {
            return Err(invalid(s, "missing repository name"));
        }
        validate_name(&name).map_err(|_| {
            invalid(
                s,
                "repository name components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
            )
        })?;
        Ok(Reference { name, tag, digest })
    }

    /// The tag, `latest` when neither tag nor digest was given (as docker does).
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    pub fn with_tag(name: &str, tag: &str) -> Self {
        Reference {
            name: name.to_string(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A repository whose first component looks like a host (`team.x/app`) would be
        // read back as `app` on host `team.x`: name the registry, as docker does.
        if self
            .name
            .split_once('/')
            .is_some_and(|(first, _)| looks_like_host(first))
        {
            f.write_str("docker.io/")?;
        }
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let r = Reference::parse("myapp:v1.0").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_deref()), ("myapp", Some("v1.0")));
        let r = Reference::parse("localhost:5000/team/app:1").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_deref()), ("team/app", Some("1")));
        let r = Reference::parse("docker.io/library/busybox").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag_or_latest()),
            ("busybox", Some("latest"))
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("app@{d}")).unwrap();
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert_eq!(r.tag_or_latest(), None);
    }

    #[test]
    fn printed_references_parse_back() {
        // Found by the `documents` fuzz target: `team.x/app` printed as is was read
        // back as repository `app` on host `team.x`.
        for s in [
            "docker.io/s3docker.io/s3docky:1",
            "localhost:5000/team.x/app:1",
            "reg.example.com/localhost/app",
            "docker.io/docker.io/library/x:2",
            "team/app:1",
            "a.b",
            "docker.io/library/busybox",
        ] {
            let r = Reference::parse(s).unwrap();
            let printed = r.to_string();
            assert_eq!(
                Reference::parse(&printed).unwrap(),
                r,
                "{s:?} printed as {printed:?}"
            );
        }
        let r = Reference::parse("localhost:5000/team.x/app:1").unwrap();
        assert_eq!(r.name, "team.x/app");
        assert_eq!(r.to_string(), "docker.io/team.x/app:1");
        assert_eq!(
            Reference::parse("team/app:1").unwrap().to_string(),
            "team/app:1"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for s in [
            "",
            "App:1",
            "app:",
            "app:-x",
            "a//b",
            "app@sha256:xyz",
            "../x",
            "app:1:2",
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?}");
        }
    }
}
