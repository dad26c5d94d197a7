//! The WebSocket-over-HTTP codec (`application/websocket-events`), which decodes every
//! request body the relay or a remote proxy sends a component.
//!
//! Properties: decoding arbitrary bytes never panics; whatever decodes re-encodes to a
//! body that decodes to the same events; and any event list built from the same bytes
//! survives encode → decode unchanged (a close reason only with a code, which is all the
//! format carries).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use earshot_protocol::events::{decode_events, encode_events, Event};
use libfuzzer_sys::fuzz_target;

/// A mirror of [`Event`] that `arbitrary` can build.
#[derive(Arbitrary, Debug)]
enum AnyEvent {
    Open,
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close { code: Option<u16>, reason: String },
    Disconnect,
}

impl From<AnyEvent> for Event {
    fn from(e: AnyEvent) -> Self {
        match e {
            AnyEvent::Open => Event::Open,
            AnyEvent::Text(t) => Event::Text(t),
            AnyEvent::Binary(b) => Event::Binary(b),
            AnyEvent::Ping(b) => Event::Ping(b),
            AnyEvent::Pong(b) => Event::Pong(b),
            // The wire format carries a reason only after a code (`Event::Close` docs).
            AnyEvent::Close { code: None, .. } => Event::Close { code: None, reason: String::new() },
            AnyEvent::Close { code, reason } => Event::Close { code, reason },
            AnyEvent::Disconnect => Event::Disconnect,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = decode_events(data) {
        let body = encode_events(&events);
        assert_eq!(decode_events(&body).as_ref(), Ok(&events), "re-encoded body {body:?}");
    }

    let Ok(list) = Vec::<AnyEvent>::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let events: Vec<Event> = list.into_iter().map(Event::from).collect();
    let body = encode_events(&events);
    assert_eq!(decode_events(&body).as_ref(), Ok(&events), "body {body:?}");
});
