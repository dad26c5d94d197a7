//! Carries what a guest printed into the host's JSON log stream, tagged with the
//! component's name. A guest line that is itself a JSON object keeps its contract
//! fields (`meeting_id`, `source`, `connection_id`, `state`) as log fields.

use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// Forwards the guest's stdout and stderr, one log event per line.
pub(crate) fn forward_guest_output(component: &str, stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) {
    for (pipe, is_err) in [(stdout, false), (stderr, true)] {
        let bytes = pipe.contents();
        if bytes.is_empty() {
            continue;
        }
        for line in String::from_utf8_lossy(&bytes).lines() {
            if line.trim().is_empty() {
                continue;
            }
            emit(component, line, is_err);
        }
    }
}

fn emit(component: &str, line: &str, is_err: bool) {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(line).ok();
    let Some(mut obj) = parsed else {
        if is_err {
            tracing::warn!(target: "component", component, "{line}");
        } else {
            tracing::info!(target: "component", component, "{line}");
        }
        return;
    };
    // Taken out of the object (no copies): what is left are the line's other fields.
    let mut take = |k: &str| match obj.remove(k) {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => {
            obj.insert(k.to_owned(), other);
            None
        }
        None => None,
    };
    let level = take("level");
    let msg = take("msg").or_else(|| take("message")).unwrap_or_default();
    let meeting_id = take("meeting_id");
    let source = take("source");
    let connection_id = take("connection_id");
    let state = take("state");
    let extra = if obj.is_empty() { None } else { Some(serde_json::Value::Object(obj).to_string()) };
    macro_rules! ev {
        ($lvl:ident) => {
            tracing::$lvl!(
                target: "component",
                component,
                meeting_id = meeting_id.as_deref(),
                source = source.as_deref(),
                connection_id = connection_id.as_deref(),
                state = state.as_deref(),
                fields = extra.as_deref(),
                "{msg}"
            )
        };
    }
    match level.as_deref().unwrap_or(if is_err { "warn" } else { "info" }) {
        "error" => ev!(error),
        "warn" | "warning" => ev!(warn),
        "debug" => ev!(debug),
        "trace" => ev!(trace),
        _ => ev!(info),
    }
}
