//! The Spin shell: the HTTP entry point (`wasi:http/incoming-handler`), over
//! `earshot_ws_session::shell`, and the effects over Spin's key-value store and outbound
//! Redis (`backend`).

mod backend;

use earshot_component_common::request::RequestParts;
use earshot_ws_session::session;
use earshot_ws_session::settings::ConnSettings;
use earshot_ws_session::shell::{self, HttpError};
use spin_sdk::http::{IncomingRequest, Response};

use crate::subscriber::Subscribe;
use backend::SpinBackend;

/// The component's name in log lines and errors.
const NAME: &str = "subscribe";

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
        ConnSettings::from_lookup(shell::variable).map_err(|e| shell::misconfigured(NAME, &e))?;
    let now_ms = shell::now_ms()?;
    let input =
        shell::read_input::<Subscribe<SpinBackend>>(req, parts, &settings.grip_sig_key, now_ms)
            .await?;
    let mut backend = SpinBackend::new(&settings);
    let reply = session::handle::<Subscribe<SpinBackend>>(input, &settings, &mut backend);
    Ok(shell::response(reply))
}
