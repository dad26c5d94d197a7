//! HTTP route matching with Spin's rules: exact routes, `/prefix/...` wildcards, and the
//! most specific match wins (exact before wildcard, longer prefix before shorter).

/// One route pattern bound to a component.
#[derive(Debug, Clone)]
struct Route {
    /// Path without the trailing `/...` (empty for the root wildcard).
    prefix: String,
    wildcard: bool,
    component: String,
    pattern: String,
}

/// A routing table built from the manifest's HTTP triggers.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// The outcome of routing a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// Component id.
    pub component: &'a str,
    /// The route as written in `spin.toml` (`spin-matched-route`).
    pub pattern: &'a str,
    /// The matched part of the path (`spin-component-route`).
    pub base: &'a str,
    /// The rest of the path after the matched prefix (`spin-path-info`).
    pub path_info: String,
}

impl Router {
    /// Builds a router from `(route, component)` pairs.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut routes: Vec<Route> = routes
            .into_iter()
            .map(|(pattern, component)| {
                let (prefix, wildcard) = match pattern.strip_suffix("/...") {
                    Some(p) => (p.trim_end_matches('/').to_owned(), true),
                    None => (pattern.trim_end_matches('/').to_owned(), false),
                };
                Route { prefix, wildcard, component: component.to_owned(), pattern: pattern.to_owned() }
            })
            .collect();
        // Most specific first: exact routes, then wildcards by descending prefix length.
        routes.sort_by(|a, b| a.wildcard.cmp(&b.wildcard).then(b.prefix.len().cmp(&a.prefix.len())));
        Router { routes }
    }

    /// Finds the component serving `path` (no query string).
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let trimmed = path.trim_end_matches('/');
        self.routes.iter().find_map(|r| {
            if !r.wildcard {
                return (trimmed == r.prefix).then(|| RouteMatch {
                    component: &r.component,
                    pattern: &r.pattern,
                    base: &r.prefix,
                    path_info: String::new(),
                });
            }
            let rest = path.strip_prefix(r.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| RouteMatch {
                component: &r.component,
                pattern: &r.pattern,
                base: &r.prefix,
                path_info: rest.to_owned(),
            })
        })
    }

    /// Whether any route is defined.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = Router::new([
            ("/...", "static"),
            ("/api/v1/auth/...", "auth"),
            ("/api/v1/health", "health"),
            ("/api/v1/...", "api"),
        ]);
        assert_eq!(r.route("/api/v1/health").unwrap().component, "health");
        assert_eq!(r.route("/api/v1/health/").unwrap().component, "health");
        assert_eq!(r.route("/api/v1/healthz").unwrap().component, "api");
        let m = r.route("/api/v1/auth/token").unwrap();
        assert_eq!((m.component, m.path_info.as_str(), m.base), ("auth", "/token", "/api/v1/auth"));
        assert_eq!(r.route("/api/v1/authx").unwrap().component, "api");
        assert_eq!(r.route("/index.html").unwrap().component, "static");
    }

    #[test]
    fn no_route_is_none() {
        let r = Router::new([("/a", "x"), ("/b/...", "y")]);
        assert!(r.route("/c").is_none());
        assert!(r.route("/bc").is_none());
        assert_eq!(r.route("/b").unwrap().component, "y");
    }
}
