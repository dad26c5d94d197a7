//! `Manifest::parse`: the `spin.toml` an operator hands `earshot up --manifest`.
//!
//! Properties: never panics; an accepted manifest has version-2 semantics: every trigger
//! names a defined component, every HTTP route starts with `/`, every variable name
//! follows Spin's grammar, and component sources resolve under the manifest's folder.
#![no_main]

use std::path::Path;

use earshot_host::manifest::{check_variable_name, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let base = Path::new("/app");
    let Ok(m) = Manifest::parse(text, base) else { return };
    for t in &m.http_triggers {
        assert!(m.components.contains_key(&t.component), "{t:?}");
        assert!(t.route.starts_with('/'), "{t:?}");
    }
    for t in &m.redis_triggers {
        assert!(m.components.contains_key(&t.component), "{t:?}");
    }
    for name in m.variables.keys() {
        assert!(check_variable_name(name).is_ok(), "{name:?}");
    }
    for (id, c) in &m.components {
        assert_eq!(&c.id, id);
        assert!(c.variables.keys().all(|n| check_variable_name(n).is_ok()), "{c:?}");
        // An absolute source replaces the base (Path::join), as in Spin; either way it is absolute.
        assert!(c.source.is_absolute(), "{c:?}");
    }
});
