//! The sweeper: claims due meeting ends and delivers queued webhooks, in a loop of its own
//! beside the server's listeners. Two independent loops, so a receiver that hangs for the
//! whole attempt timeout never delays a meeting's end.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use earshot_protocol::grip::{Item, PublishRequest};
use earshot_protocol::meeting_end::{
    end_call, totals_key, webhook_key, EndAnnouncement, EndMode, EndReason, MeetingTotals, ScriptCall,
    PENDING_ENDS_KEY, WEBHOOK_DUE_KEY,
};
use earshot_protocol::transcript::transcript_stream_key;
use earshot_protocol::MeetingId;
use redis::aio::ConnectionManager;

use crate::config::{SweeperConfig, WebhookConfig, BATCH, POLL_INTERVAL};
use crate::delivery::{Outcome, ATTEMPT_TIMEOUT, CLAIM_LEASE, CLAIM_SCRIPT, SETTLE_SCRIPT};
use crate::error::MeetingsError;
use crate::signature::{self, DELIVERY_ID_HEADER};
use crate::stats::SweeperStats;

/// The HTTP client: plain and TLS connections, pooled.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A meeting-end sweeper and webhook sender over one Redis.
pub struct Sweeper {
    config: SweeperConfig,
    client: redis::Client,
    http: HttpClient,
    stats: Arc<SweeperStats>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Sweeper {
    /// A sweeper for `config` (nothing connects yet).
    pub fn new(config: SweeperConfig) -> Result<Sweeper, MeetingsError> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(MeetingsError::redis("open"))?;
        // Redirects are not followed (this client has no such feature): a redirect would
        // carry the signed body somewhere the operator did not name.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .build();
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Sweeper { config, client, http, stats: Arc::new(SweeperStats::default()) })
    }

    /// A reconnecting connection to its Redis, for driving [`Sweeper::sweep_ends`] and
    /// [`Sweeper::deliver_due`] step by step (tests).
    pub async fn connection(&self) -> Result<ConnectionManager, MeetingsError> {
        connect(&self.client).await
    }

    /// Its counters (shared: `/metrics` reads them while it runs).
    pub fn stats(&self) -> Arc<SweeperStats> {
        self.stats.clone()
    }

    /// Sweeps every [`POLL_INTERVAL`] until `shutdown` resolves. A failing step (Redis
    /// down) is logged and counted, and the next poll tries again.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), MeetingsError> {
        let conn = connect(&self.client).await?;
        tracing::info!(event = "meeting_sweeper_ready", webhook = self.config.webhook.is_some(), "meeting-end sweeper running");
        let this = Arc::new(self);
        let ends = {
            let (this, mut conn) = (this.clone(), conn.clone());
            async move {
                loop {
                    if let Err(e) = this.sweep_ends(&mut conn).await {
                        this.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "meeting-end sweep failed");
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        };
        let deliveries = {
            let (this, mut conn) = (this.clone(), conn);
            async move {
                loop {
                    if let Err(e) = this.deliver_due(&mut conn).await {
                        this.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "webhook sweep failed");
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = ends => {}
            _ = deliveries => {}
        }
        Ok(())
    }

    /// Claims every meeting whose end is due now; returns the ones this sweeper ended.
    pub async fn sweep_ends(&self, conn: &mut ConnectionManager) -> Result<Vec<MeetingId>, MeetingsError> {
        let now = now_ms();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(PENDING_ENDS_KEY)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .query_async(conn)
            .await
            .map_err(MeetingsError::redis("ZRANGEBYSCORE pending ends"))?;
        let mut ended = Vec::new();
        for member in due {
            let Ok(meeting) = MeetingId::parse(&member) else {
                // Nothing writes such a member; one that appears anyway must not block the set.
                let _: () = redis::cmd("ZREM").arg(PENDING_ENDS_KEY).arg(&member).query_async(conn).await.map_err(MeetingsError::redis("ZREM"))?;
                continue;
            };
            if self.end(conn, &meeting, now).await? {
                ended.push(meeting);
            }
        }
        Ok(ended)
    }

    /// Ends `meeting` if its end is still due and nobody else ended it.
    async fn end(&self, conn: &mut ConnectionManager, meeting: &MeetingId, now: u64) -> Result<bool, MeetingsError> {
        let fields: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(totals_key(meeting)).query_async(conn).await.map_err(MeetingsError::redis("HGETALL totals"))?;
        if fields.is_empty() {
            // Deleted (DELETE /api/v1/meetings/{id}) or expired while its end was pending:
            // nothing is left to end or announce.
            let _: () = redis::cmd("ZREM").arg(PENDING_ENDS_KEY).arg(meeting.as_str()).query_async(conn).await.map_err(MeetingsError::redis("ZREM"))?;
            return Ok(false);
        }
        let segments: u64 = redis::cmd("XLEN")
            .arg(transcript_stream_key(meeting))
            .query_async(conn)
            .await
            .map_err(MeetingsError::redis("XLEN transcript"))?;
        let totals = MeetingTotals::from_hash(&fields, None, now, segments);
        let via_redis = self.config.grip_publish_url.is_empty();
        let announce = EndAnnouncement::build(
            meeting,
            EndReason::GraceExpired,
            &totals,
            via_redis,
            self.config.webhook.is_some(),
            &self.config.public_url,
        );
        let won: i64 = eval(conn, &end_call(meeting, EndMode::Due, now, &announce), "EVAL end").await?;
        if won != 1 {
            return Ok(false);
        }
        self.stats.meetings_ended.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            event = "meeting_ended",
            meeting_id = %meeting,
            reason = "grace_expired",
            duration_ms = totals.duration_ms,
            segment_count = totals.segment_count,
            "meeting ended"
        );
        if !via_redis {
            self.http_publish(&announce.item).await;
        }
        Ok(true)
    }

    /// Publishes the event through `grip_publish_url` (Pushpin in front), best effort like
    /// the components' publishes.
    async fn http_publish(&self, item_json: &str) {
        let Ok(item) = serde_json::from_str::<Item>(item_json) else { return };
        let body = serde_json::to_vec(&PublishRequest { items: vec![item] }).expect("publish requests serialize");
        if let Err(why) = self.post(&self.config.grip_publish_url, &[], body).await {
            tracing::warn!(error = %why, "publishing meeting_ended failed");
        }
    }

    /// POSTs JSON `body` to `url` with `headers`; `Err` (for the log, never naming the URL,
    /// which may carry credentials) unless the answer is 2xx within [`ATTEMPT_TIMEOUT`].
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Result<(), String> {
        let mut req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("earshot/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body))).map_err(|_| "invalid URL or header".to_owned())?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.http.request(req)).await {
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            Ok(Err(e)) => Err(format!("request failed: {e}")),
            Ok(Ok(r)) if r.status().is_success() => Ok(()),
            Ok(Ok(r)) => Err(format!("HTTP {}", r.status().as_u16())),
        }
    }

    /// Attempts every webhook delivery due now (none without a webhook configured).
    /// Returns how many attempts were made.
    pub async fn deliver_due(&self, conn: &mut ConnectionManager) -> Result<usize, MeetingsError> {
        let Some(webhook) = &self.config.webhook else { return Ok(0) };
        let now = now_ms();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(WEBHOOK_DUE_KEY)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .query_async(conn)
            .await
            .map_err(MeetingsError::redis("ZRANGEBYSCORE webhooks"))?;
        let mut attempts = 0;
        for id in due {
            let claim = ScriptCall {
                script: CLAIM_SCRIPT,
                keys: vec![WEBHOOK_DUE_KEY.to_owned(), webhook_key(&id)],
                args: vec![id.clone(), now.to_string(), (CLAIM_LEASE.as_millis() as u64).to_string()],
            };
            let claimed: Option<(u32, String)> = eval(conn, &claim, "EVAL claim delivery").await?;
            let Some((attempt, body)) = claimed else { continue };
            attempts += 1;
            let outcome = self.attempt(webhook, &id, &body).await;
            let next = match &outcome {
                Outcome::Delivered => {
                    self.stats.webhooks_delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(event = "webhook_delivered", delivery_id = %id, attempt, "meeting.ended delivered");
                    "done".to_owned()
                }
                Outcome::Failed(why) => {
                    self.stats.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
                    match self.config.retry.after(attempt) {
                        Some(wait) => {
                            tracing::warn!(event = "webhook_retry", delivery_id = %id, attempt, error = %why, retry_in_ms = wait.as_millis() as u64, "meeting.ended attempt failed");
                            (now_ms() + wait.as_millis() as u64).to_string()
                        }
                        None => {
                            self.stats.webhooks_abandoned.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(event = "webhook_abandoned", delivery_id = %id, attempt, error = %why, "meeting.ended not delivered: last attempt failed");
                            "done".to_owned()
                        }
                    }
                }
            };
            let settle = ScriptCall { script: SETTLE_SCRIPT, keys: vec![WEBHOOK_DUE_KEY.to_owned(), webhook_key(&id)], args: vec![id, next] };
            let _: i64 = eval(conn, &settle, "EVAL settle delivery").await?;
        }
        Ok(attempts)
    }

    /// One signed POST of `body`.
    async fn attempt(&self, webhook: &WebhookConfig, delivery_id: &str, body: &str) -> Outcome {
        let unix_s = now_ms() / 1_000;
        let headers = [
            (signature::HEADER, signature::sign(webhook.secret.as_bytes(), unix_s, body.as_bytes())),
            (DELIVERY_ID_HEADER, delivery_id.to_owned()),
        ];
        match self.post(&webhook.url, &headers, body.as_bytes().to_vec()).await {
            Ok(()) => Outcome::Delivered,
            Err(why) => Outcome::Failed(why),
        }
    }
}

/// A reconnecting connection for the sweeper's commands.
async fn connect(client: &redis::Client) -> Result<ConnectionManager, MeetingsError> {
    ConnectionManager::new(client.clone()).await.map_err(MeetingsError::redis("connect"))
}

/// Runs `call` and reads its reply as `T`.
async fn eval<T: redis::FromRedisValue>(conn: &mut ConnectionManager, call: &ScriptCall, what: &'static str) -> Result<T, MeetingsError> {
    // Plain EVAL: the scripts are a few hundred bytes, and EVAL needs no SHA cache miss path.
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(call.script).arg(call.keys.len()).arg(&call.keys).arg(&call.args);
    cmd.query_async(conn).await.map_err(MeetingsError::redis(what))
}

/// TLS for https webhooks: rustls with ring and the Mozilla roots.
fn tls_config() -> Result<rustls::ClientConfig, MeetingsError> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| MeetingsError::Http(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
