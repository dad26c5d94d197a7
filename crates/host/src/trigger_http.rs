//! The HTTP trigger: a request routed by `spin.toml`'s `[[trigger.http]]` routes to a
//! fresh instance of its component (`wasi:http/incoming-handler`), with the `spin-*`
//! headers Spin sets, answered as the guest streams its response.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::app::App;
use crate::guest_log::forward_guest_output;
use crate::instance_pool::InstanceBusy;
use crate::routes::RouteMatch;
use crate::state::{ComponentRuntime, HostState};

impl App {
    /// Serves one HTTP request through the component its route names. Answers 404
    /// when no route matches and 500 when the guest fails.
    pub async fn handle_http<B>(
        &self,
        req: http::Request<B>,
        client_addr: Option<SocketAddr>,
    ) -> http::Response<HyperOutgoingBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let path = req.uri().path().to_owned();
        let Some(matched) = self.router.route(&path) else {
            return plain(http::StatusCode::NOT_FOUND, "not found\n");
        };
        let Some(component) = self.components.get(matched.component) else {
            return plain(http::StatusCode::NOT_FOUND, "not found\n");
        };
        let Some(pre) = component.http.clone() else {
            return plain(http::StatusCode::NOT_FOUND, "not found\n");
        };
        let id = component.runtime.id.clone();
        let req = with_spin_headers(req, &matched, client_addr);
        match self.call_http(pre, &component.runtime, req).await {
            Ok(resp) => resp,
            Err(e) if e.downcast_ref::<InstanceBusy>().is_some() => {
                tracing::warn!(component = %id, error = %e, queued = self.pool.queued(), "request not served: no free instance");
                busy()
            }
            Err(e) => {
                tracing::error!(component = %id, error = format!("{e:#}"), "component failed");
                plain(http::StatusCode::INTERNAL_SERVER_ERROR, "component failed\n")
            }
        }
    }

    async fn call_http<B>(
        &self,
        pre: ProxyPre<HostState>,
        runtime: &Arc<ComponentRuntime>,
        req: http::Request<B>,
    ) -> anyhow::Result<http::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        // Held by the guest's task until its store is gone: the slot is the instance.
        let slot = self.pool.acquire().await?;
        let mut store = self.new_store(runtime);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(anyhow::Error::from)
            .context("handing the request to the guest")?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(anyhow::Error::from)
            .context("creating the guest's response slot")?;
        let id = runtime.id.clone();
        // The guest runs in its own task so it may keep streaming the body after the
        // head is sent; its output is forwarded to the log when it finishes.
        let task = tokio::spawn(async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            }
            .await;
            let state = store.data();
            forward_guest_output(&id, &state.stdout, &state.stderr);
            drop(store);
            drop(slot);
            result.map_err(anyhow::Error::from)
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(anyhow!("guest answered with an error code: {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(anyhow!("guest never set a response")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::Error::from(e).context("guest task failed")),
            },
        }
    }
}

/// Adds the headers Spin gives HTTP components (`spin-full-url`, `spin-path-info`…),
/// after removing any a client sent, so a guest can trust them.
fn with_spin_headers<B>(
    mut req: http::Request<B>,
    matched: &RouteMatch<'_>,
    client_addr: Option<SocketAddr>,
) -> http::Request<B> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let full_url = format!("http://{host}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let headers = req.headers_mut();
    let names = [
        "spin-full-url",
        "spin-path-info",
        "spin-matched-route",
        "spin-component-route",
        "spin-raw-component-route",
        "spin-base-path",
        "spin-client-addr",
    ];
    for n in names {
        headers.remove(n);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("spin-full-url", &full_url);
    set("spin-path-info", &matched.path_info);
    set("spin-matched-route", matched.pattern);
    set("spin-component-route", matched.base);
    set("spin-raw-component-route", matched.pattern);
    set("spin-base-path", "/");
    if let Some(addr) = client_addr {
        set("spin-client-addr", &addr.to_string());
    }
    req
}

/// Body of the 503 a request gets when it waited past the instance queue's deadline
/// (or found the queue full); the relay closes the WebSocket 1011 on it.
pub const BUSY_BODY: &str = "busy: no free component instance (instance queue deadline passed)\n";

/// Seconds a client is asked to wait (`Retry-After`) after [`BUSY_BODY`]: about one
/// queue deadline, by which time the burst has drained or the host is plainly overloaded.
pub const BUSY_RETRY_AFTER_S: u64 = 5;

/// 503 + `Retry-After`: every instance stayed busy past the queue deadline.
fn busy() -> http::Response<HyperOutgoingBody> {
    let mut resp = plain(http::StatusCode::SERVICE_UNAVAILABLE, BUSY_BODY);
    resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(BUSY_RETRY_AFTER_S));
    resp
}

/// A small text response produced by the host itself.
pub fn plain(status: http::StatusCode, text: &'static str) -> http::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .expect("static response parts are valid")
}
