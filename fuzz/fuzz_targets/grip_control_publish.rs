//! GRIP: the `c:` control messages a backend embeds in TEXT events (`Control::parse`,
//! read by the relay from every backend response) and the `POST /publish/` body
//! (`PublishRequest`, from any loopback peer or key holder, and from Redis fan-out).
//!
//! Properties: neither panics; an accepted control message survives `to_text` → `parse`;
//! an accepted publish body survives serialize → parse, and every item either yields a
//! WebSocket payload or a typed refusal; `id_after` is never true both ways.
#![no_main]

use earshot_protocol::grip::{id_after, Control, PublishRequest, WsPayload, CONTROL_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // As a TEXT event from a backend, with and without the control prefix.
    for candidate in [text.to_string(), format!("{CONTROL_PREFIX}{text}")] {
        if let Some(Ok(control)) = Control::parse(&candidate) {
            let again = control.to_text();
            assert_eq!(Control::parse(&again).map(Result::ok), Some(Some(control)), "{again}");
        }
    }

    // As a publish body.
    if let Ok(request) = serde_json::from_slice::<PublishRequest>(data) {
        let json = serde_json::to_string(&request).expect("publish requests serialize");
        let again: PublishRequest = serde_json::from_str(&json).expect("a serialized request parses");
        assert_eq!(again, request);
        for item in &request.items {
            match item.ws_payload() {
                Ok(WsPayload::Text(t)) => assert_eq!(item.formats.ws_message.as_ref().and_then(|w| w.content.as_ref()), Some(&t)),
                Ok(WsPayload::Binary(_)) | Err(_) => {}
            }
            if let Some(id) = &item.id {
                assert!(!id_after(id, id), "{id}");
            }
        }
    }

    // Item ids against a resume point, as `release` compares them.
    if let Some((a, b)) = text.split_once('\n') {
        assert!(!(id_after(a, b) && id_after(b, a)), "{a:?} {b:?}");
    }
});
