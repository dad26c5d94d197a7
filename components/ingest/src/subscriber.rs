//! Subscriber routes: `/ws/meetings/{id}` (channel `meeting:{id}`) and `/ws/transcript/{id}`
//! (channel `transcript:{id}`). Accepting subscribes the connection through GRIP; from then
//! on the relay delivers the channel's messages itself and this component only hears from
//! the connection when the client speaks, which it must not (except keepalives).

use earshot_protocol::close::{REASON_SUBSCRIBER_BINARY, REASON_SUBSCRIBER_TEXT};
use earshot_protocol::grip::Control;
use earshot_protocol::ids::{meeting_channel, transcript_channel};
use earshot_protocol::ingest::ClientMessage;
use earshot_protocol::{CloseCode, Event, WsRoute};

use crate::effects::Effects;
use crate::log::State;
use crate::session::Session;

impl<E: Effects> Session<'_, E> {
    /// An authenticated OPEN: accept and subscribe to the route's channel.
    pub(crate) fn open_subscriber(&mut self, sub: &str) {
        let channel = match self.route {
            WsRoute::Meeting { meeting } => meeting_channel(meeting),
            WsRoute::Transcript { meeting, .. } => transcript_channel(meeting),
            WsRoute::Ingest { .. } => unreachable!("subscriber handlers run on subscriber routes"),
        };
        self.accept(sub);
        self.out.push(Event::Text(
            Control::Subscribe {
                channel: channel.clone(),
            }
            .to_text(),
        ));
        let line = self
            .log
            .transition(State::Connected, "connected")
            .with("channel", channel);
        self.emit(line);
    }

    /// A text message: `{"type":"keepalive"}` is fine, anything else closes 1003.
    pub(crate) fn subscriber_text(&mut self, text: &str) {
        if ClientMessage::parse(text) != Ok(ClientMessage::Keepalive) {
            self.close(CloseCode::Unsupported, REASON_SUBSCRIBER_TEXT);
        }
    }

    /// A binary message: closes 1003.
    pub(crate) fn subscriber_binary(&mut self) {
        self.close(CloseCode::Unsupported, REASON_SUBSCRIBER_BINARY);
    }
}
