//! The Spin shell: the HTTP entry point (`wasi:http/incoming-handler`), over
//! `earshot_ws_session::shell`, and the effects over Spin's key-value store, outbound Redis
//! and outbound HTTP (`backend`).

mod backend;

use earshot_component_common::grip;
use earshot_component_common::request::RequestParts;
use earshot_ws_session::effects::Effects as _;
use earshot_ws_session::log::Level;
use earshot_ws_session::session;
use earshot_ws_session::shell::{self, HttpError};
use spin_sdk::http::{IncomingRequest, Response};

use crate::ingest::Ingest;
use crate::settings::Settings;
use backend::SpinBackend;

/// The component's name in log lines and errors.
const NAME: &str = "ingest";

async fn handle(req: IncomingRequest) -> Response {
    let parts = RequestParts::of(&req);
    match serve(req, &parts).await {
        Ok(response) => response,
        Err(err) => shell::refused(NAME, &parts, &err),
    }
}

/// The component's export: the macro's wit-bindgen glue is `unsafe` (`export_name`, raw
/// pointers), so `unsafe_code` is allowed in this module alone; everything else in the crate
/// stays under the workspace's `deny`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    async fn handle(req: spin_sdk::http::IncomingRequest) -> spin_sdk::http::Response {
        super::handle(req).await
    }
}

async fn serve(req: IncomingRequest, parts: &RequestParts) -> Result<Response, HttpError> {
    let settings =
        Settings::from_lookup(shell::variable).map_err(|e| shell::misconfigured(NAME, &e))?;
    let now_ms = shell::now_ms()?;
    let input =
        shell::read_input::<Ingest<SpinBackend>>(req, parts, &settings.conn.grip_sig_key, now_ms)
            .await?;
    let mut backend = SpinBackend::new(&settings);
    let reply = session::handle::<Ingest<SpinBackend>>(input, &settings, &mut backend);
    // Channel messages go out after the connection's own state is settled; a failure is
    // logged and changes nothing for the client.
    for (url, body) in backend.take_http_publishes() {
        if let Err(detail) = grip::http_publish(&url, body).await {
            let line = reply
                .log
                .line(Level::Warn, "publish failed")
                .with("detail", detail.0);
            backend.log(line.into_value());
        }
    }
    Ok(shell::response(reply))
}
