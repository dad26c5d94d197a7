//! Outbound HTTP (`wasi:http/outgoing-handler`), allowed only to the destinations in
//! the component's `allowed_outbound_hosts`, as in Spin.

use std::future::Future;
use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::outbound::AllowedHosts;

/// Hooks that gate `send_request` on the component's allow-list.
pub(crate) struct OutboundHttpHooks {
    pub(crate) allowed: Arc<AllowedHosts>,
}

type SendResult = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>;

impl WasiHttpHooks for OutboundHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_owned();
        let host = uri.host().unwrap_or("").to_owned();
        let port = uri.port_u16();
        if !self.allowed.allows(&scheme, &host, port) {
            tracing::warn!(destination = %format!("{scheme}://{host}"), "outbound http denied by allowed_outbound_hosts");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}
