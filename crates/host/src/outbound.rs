//! `allowed_outbound_hosts`: which destinations a component may reach, with Spin's
//! pattern grammar (`scheme://host:port`, `*` for any scheme, host or port,
//! `*.domain` for subdomains, `insecure:allow-all`).

/// One parsed allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Suffix(String),
    Exact(String),
}

/// A component's compiled allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    allow_all: bool,
    patterns: Vec<Pattern>,
}

/// The port a scheme implies when a URL or pattern omits it.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" | "rediss" => Some(6379),
        _ => None,
    }
}

impl AllowedHosts {
    /// Parses rendered (template-free) entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out = AllowedHosts::default();
        for entry in entries {
            if entry == "insecure:allow-all" {
                out.allow_all = true;
                continue;
            }
            let (scheme, rest) = entry
                .split_once("://")
                .ok_or_else(|| format!("`{entry}`: expected scheme://host[:port]"))?;
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let port = match port {
                Some("*") => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| format!("`{entry}`: bad port `{p}`"))?),
                None if scheme == "*" => None,
                None => Some(
                    default_port(scheme)
                        .ok_or_else(|| format!("`{entry}`: scheme `{scheme}` needs an explicit port"))?,
                ),
            };
            let host = match host {
                "*" => HostPattern::Any,
                h if h.starts_with("*.") => HostPattern::Suffix(h[1..].to_ascii_lowercase()),
                "" => return Err(format!("`{entry}`: empty host")),
                h => HostPattern::Exact(h.to_ascii_lowercase()),
            };
            let scheme = (scheme != "*").then(|| scheme.to_owned());
            out.patterns.push(Pattern { scheme, host, port });
        }
        Ok(out)
    }

    /// Whether `scheme://host:port` may be reached.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if self.allow_all {
            return true;
        }
        let host = host.to_ascii_lowercase();
        let port = port.or_else(|| default_port(scheme));
        self.patterns.iter().any(|p| {
            p.scheme.as_deref().is_none_or(|s| s == scheme)
                && match &p.host {
                    HostPattern::Any => true,
                    HostPattern::Suffix(s) => host.ends_with(s.as_str()),
                    HostPattern::Exact(h) => *h == host,
                }
                && p.port.is_none_or(|want| Some(want) == port)
        })
    }

    /// Whether a URL such as `redis://127.0.0.1:6379/0` may be reached.
    pub fn allows_url(&self, url: &str) -> bool {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h, Some(p)),
                Err(_) => return false,
            },
            _ => (authority, None),
        };
        self.allows(scheme, host.trim_start_matches('[').trim_end_matches(']'), port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn matches_scheme_host_and_port() {
        let a = allow(&["redis://*:*", "https://api.example.com", "http://*.local:8080"]);
        assert!(a.allows_url("redis://127.0.0.1:41234"));
        assert!(a.allows_url("redis://user:pw@10.0.0.1/0"));
        assert!(!a.allows_url("rediss://127.0.0.1:6379"));
        assert!(a.allows_url("https://api.example.com/v1"));
        assert!(!a.allows_url("https://api.example.com:8443/v1"));
        assert!(a.allows_url("http://svc.local:8080/x"));
        assert!(!a.allows_url("http://svc.remote:8080/x"));
    }

    #[test]
    fn empty_list_denies_everything_and_allow_all_allows() {
        assert!(!allow(&[]).allows_url("http://127.0.0.1/"));
        assert!(allow(&["insecure:allow-all"]).allows_url("ftp://x:1"));
        assert!(AllowedHosts::parse(&["nonsense".into()]).is_err());
    }
}
