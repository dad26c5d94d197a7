//! The Redis trigger: each `[[trigger.redis]]` channel SUBSCRIBEd at its resolved
//! address, every message handed, in order, to a fresh instance of its component
//! (`fermyon:spin/inbound-redis`).
//!
//! Addresses resolve the way Spin resolves them: a trigger's own `address`, else the
//! application's `[application.trigger.redis] address`, each a template over the
//! application variables (`"{{ redis_url }}"`, so `SPIN_VARIABLE_REDIS_URL` and host
//! overrides apply). `earshot up --redis <url>` (HostConfig::redis_url) replaces the
//! application default. An empty address means the trigger does not run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;

use crate::app::App;
use crate::error::VariableError;
use crate::guest_log::forward_guest_output;
use crate::manifest::Manifest;
use crate::redis_out::redact_url;
use crate::variables::Variables;

/// Backoff bounds for re-subscribing a Redis trigger after its connection fails:
/// quick enough to catch a Redis restart, capped so a Redis that stays down costs one
/// attempt every few seconds.
const REDIS_TRIGGER_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REDIS_TRIGGER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One Redis trigger as this host runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTriggerPlan {
    /// Channel to SUBSCRIBE to.
    pub channel: String,
    /// Component id that handles its messages.
    pub component: String,
    /// Resolved Redis address; `None` when it resolved empty (the trigger is idle).
    pub address: Option<String>,
}

/// Resolves every Redis trigger's address at load, so an undefined variable in an
/// address fails the load instead of the first subscription.
pub(crate) fn plan(
    manifest: &Manifest,
    variables: &Variables,
    host_redis_url: Option<&str>,
) -> Result<Vec<RedisTriggerPlan>, VariableError> {
    let app_default = match host_redis_url {
        Some(url) => Some(url.to_owned()),
        None => manifest.redis_trigger_address.as_deref().map(|a| variables.render(a)).transpose()?,
    };
    manifest
        .redis_triggers
        .iter()
        .map(|t| {
            let address = match &t.address {
                Some(own) => Some(variables.render(own)?),
                None => app_default.clone(),
            };
            Ok(RedisTriggerPlan {
                channel: t.channel.clone(),
                component: t.component.clone(),
                address: address.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()),
            })
        })
        .collect()
}

impl App {
    /// The Redis triggers with their resolved addresses.
    pub fn redis_triggers(&self) -> &[RedisTriggerPlan] {
        &self.redis_triggers
    }

    /// Delivers one Redis message to a Redis-trigger component.
    pub async fn handle_redis_message(&self, component_id: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let component = self
            .components
            .get(component_id)
            .ok_or_else(|| anyhow!("no component `{component_id}`"))?;
        let pre = component.redis.clone().ok_or_else(|| anyhow!("`{component_id}` is not a Redis component"))?;
        let slot = self.pool.acquire().await.with_context(|| format!("component `{component_id}`"))?;
        let mut store = self.new_store(&component.runtime);
        let result = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.fermyon_spin_inbound_redis().call_handle_message(&mut store, &payload).await
        }
        .await;
        let state = store.data();
        forward_guest_output(component_id, &state.stdout, &state.stderr);
        drop(store);
        drop(slot);
        match result.map_err(anyhow::Error::from).with_context(|| format!("component `{component_id}` trapped"))? {
            Ok(()) => Ok(()),
            Err(e) => bail!("component `{component_id}` rejected the message: {e:?}"),
        }
    }

    /// Subscribes every Redis trigger with an address and feeds it until the app is
    /// dropped. Triggers whose address resolved empty stay idle (the embedded default
    /// runs without Redis); that is logged once here.
    pub fn spawn_redis_triggers(self: &Arc<Self>) {
        let idle: Vec<&str> =
            self.redis_triggers.iter().filter(|t| t.address.is_none()).map(|t| t.channel.as_str()).collect();
        if !idle.is_empty() {
            tracing::info!(channels = %idle.join(","), "Redis trigger address is empty: these Redis triggers are idle");
        }
        for trigger in &self.redis_triggers {
            let Some(address) = trigger.address.clone() else { continue };
            tokio::spawn(feed(Arc::downgrade(self), address, trigger.channel.clone(), trigger.component.clone()));
        }
    }
}

/// One trigger's life: subscribe, hand over messages, resubscribe with backoff after
/// the connection fails, stop once the app is gone.
async fn feed(app: std::sync::Weak<App>, address: String, channel: String, component: String) {
    let mut backoff = REDIS_TRIGGER_BACKOFF_MIN;
    loop {
        match subscribe(&address, &channel).await {
            Ok(mut pubsub) => {
                tracing::info!(channel = %channel, component = %component, redis = %redact_url(&address), "redis trigger subscribed");
                backoff = REDIS_TRIGGER_BACKOFF_MIN;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Some(app) = app.upgrade() else { return };
                    let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                    // Messages are handled one at a time per channel, in order: a
                    // transcript stream must keep the order its worker published.
                    if let Err(e) = app.handle_redis_message(&component, payload).await {
                        tracing::warn!(channel = %channel, component = %component, error = format!("{e:#}"), "redis message not handled");
                    }
                }
                tracing::warn!(channel = %channel, "redis trigger connection closed; resubscribing");
            }
            Err(e) => {
                tracing::warn!(channel = %channel, redis = %redact_url(&address), error = format!("{e:#}"), "redis trigger cannot subscribe; retrying");
            }
        }
        if app.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(REDIS_TRIGGER_BACKOFF_MAX);
    }
}

async fn subscribe(address: &str, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
    let client = redis::Client::open(address).context("parsing the Redis address")?;
    let mut pubsub = client.get_async_pubsub().await.context("connecting")?;
    pubsub.subscribe(channel).await.context("SUBSCRIBE")?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn manifest(app_address: Option<&str>, trigger_address: Option<&str>) -> Manifest {
        let app = app_address.map(|a| format!("[application.trigger.redis]\naddress = \"{a}\"\n")).unwrap_or_default();
        let own = trigger_address.map(|a| format!("address = \"{a}\"\n")).unwrap_or_default();
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"t\"\n{app}\
             [variables]\nredis_url = {{ default = \"\" }}\n\
             [[trigger.redis]]\nchannel = \"c\"\ncomponent = \"w\"\n{own}\
             [component.w]\nsource = \"w.wasm\"\n"
        );
        Manifest::parse(&text, Path::new("/")).unwrap()
    }

    fn address(m: &Manifest, env: &[(&str, &str)], host: Option<&str>) -> Option<String> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let vars = Variables::resolve(m, &BTreeMap::new(), |k| env.get(k).cloned()).unwrap();
        plan(m, &vars, host).unwrap().remove(0).address
    }

    #[test]
    fn the_application_address_is_a_template_over_variables() {
        let m = manifest(Some("{{ redis_url }}"), None);
        assert_eq!(address(&m, &[], None), None, "empty default: the trigger is idle");
        assert_eq!(address(&m, &[("SPIN_VARIABLE_REDIS_URL", "redis://env:1")], None).as_deref(), Some("redis://env:1"));
        assert_eq!(
            address(&m, &[("SPIN_VARIABLE_REDIS_URL", "redis://env:1")], Some("redis://flag:2")).as_deref(),
            Some("redis://flag:2"),
            "--redis wins over the manifest's address"
        );
    }

    #[test]
    fn a_trigger_address_wins_and_no_address_at_all_is_idle() {
        let m = manifest(Some("redis://app:1"), Some("redis://own:2"));
        assert_eq!(address(&m, &[], Some("redis://flag:3")).as_deref(), Some("redis://own:2"));
        assert_eq!(address(&manifest(None, None), &[], None), None);
        assert_eq!(address(&manifest(Some("redis://literal:6379"), None), &[], None).as_deref(), Some("redis://literal:6379"));
    }

    #[test]
    fn an_undefined_variable_in_an_address_fails() {
        let m = manifest(Some("{{ nope }}"), None);
        let vars = Variables::resolve(&m, &BTreeMap::new(), |_| None).unwrap();
        assert_eq!(plan(&m, &vars, None), Err(VariableError::Undefined("nope".into())));
    }
}
