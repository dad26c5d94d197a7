//! `ClientMessage::parse`: every text message a capture agent sends on the ingest route.
//!
//! Properties: never panics; an accepted message survives `to_json` → `parse`; a refusal
//! always maps to a close code of the ingest protocol (1002 or 1003) and its reason fits
//! a close frame once the relay trims it.
#![no_main]

use earshot_protocol::close::{fit_reason, MAX_REASON_BYTES};
use earshot_protocol::ingest::ClientMessage;
use earshot_protocol::CloseCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ClientMessage::parse(&text) {
        Ok(message) => {
            let json = message.to_json();
            assert_eq!(ClientMessage::parse(&json).as_ref(), Ok(&message), "{json}");
            if let ClientMessage::Handshake(h) = &message {
                assert!(h.validate().is_ok());
                assert!(h.bytes_per_sample_frame() >= 2);
            }
        }
        Err(e) => {
            assert!(matches!(e.close_code(), CloseCode::ProtocolError | CloseCode::Unsupported), "{e:?}");
            assert!(fit_reason(&e.to_string()).len() <= MAX_REASON_BYTES);
        }
    }
});
