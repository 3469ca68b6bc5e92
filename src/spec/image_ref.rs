//! Image references as users write them (`busybox`, `localhost:5000/web:1`,
//! `ghcr.io/org/app@sha256:…`), parsed and normalized the way Docker, podman and
//! containerd do: a first component with a `.` or a `:` (or `localhost`) is the registry,
//! else Docker Hub, where a one-component name lives under `library/`; no tag and no
//! digest means `:latest`. Pure: the loader checks a definition's `c.image` with it, the
//! image store keys its names by its canonical text.

use std::fmt;

/// Docker Hub's registry as references name it.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// The repository path, e.g. `library/busybox`, `org/app`.
    pub repository: String,
    /// The tag, when given (or implied: `latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, when given: it wins over the tag.
    pub digest: Option<String>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct RefError {
    /// The text as written.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

fn path_component_ok(c: &str) -> bool {
    // [a-z0-9]+ separated by one of '.', '_', '__' or any number of '-'.
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn registry_ok(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || r.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    port_ok && host_ok
}

fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Whether `d` is a digest this project verifies: `sha256:` and 64 lower-case hex digits.
pub fn digest_ok(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl ImageRef {
    /// Parses and normalizes a reference.
    pub fn parse(text: &str) -> Result<ImageRef, RefError> {
        let err = |reason: &str| RefError {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(err("empty"));
        }
        if text.len() > 4096 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("blanks, control characters or over 4096 bytes"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if !digest_ok(d) {
                    return Err(err(
                        "the digest must be sha256: followed by 64 lower-case hex digits",
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !tag_ok(t) {
                    return Err(err(
                        "a tag is 1-128 letters, digits, '_', '.' or '-' and does not start with '.' or '-'",
                    ));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), p.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if !registry_ok(&registry) {
            return Err(err("the registry must be host or host:port"));
        }
        if path.is_empty() || !path.split('/').all(path_component_ok) {
            return Err(err(
                "a repository path is lower-case letters and digits separated by '/', '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + repository.len() + 1 > 255 {
            return Err(err("the name is over 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What a registry is asked for: the digest when there is one, else the tag.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same reference pinned to `digest` (the tag kept for the reader).
    pub fn pinned(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The same reference without its digest.
    pub fn unpinned(&self) -> ImageRef {
        ImageRef {
            digest: None,
            tag: Some(self.tag.clone().unwrap_or_else(|| "latest".into())),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn canon(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_as_docker_does() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(canon("org/app"), "docker.io/org/app:latest");
        assert_eq!(canon("index.docker.io/org/app:v1"), "docker.io/org/app:v1");
        assert_eq!(canon("localhost/web"), "localhost/web:latest");
        assert_eq!(canon("localhost:5000/web:1"), "localhost:5000/web:1");
        assert_eq!(canon("ghcr.io/a/b/c:1.0-rc_1"), "ghcr.io/a/b/c:1.0-rc_1");
        assert_eq!(
            canon(&format!("web@{D}")),
            format!("docker.io/library/web@{D}")
        );
        assert_eq!(
            canon(&format!("127.0.0.1:5000/web:1@{D}")),
            format!("127.0.0.1:5000/web:1@{D}")
        );
        let r = ImageRef::parse(&format!("10.1.2.3:5000/a/web:2@{D}")).unwrap();
        assert_eq!(r.registry, "10.1.2.3:5000");
        assert_eq!(r.repository, "a/web");
        assert_eq!(r.target(), D);
        assert_eq!(r.unpinned().to_string(), "10.1.2.3:5000/a/web:2");
        assert_eq!(r.name(), "10.1.2.3:5000/a/web");
    }

    #[test]
    fn refuses_what_a_registry_would() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "/a",
            "a/",
            "web@sha256:abc",
            "web@md5:0123",
            "web:1 2",
            "a..b",
            "host:99999999/web",
            "web:\u{7}",
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("invalid image reference"),
                "{bad}: {e}"
            );
        }
    }
}
