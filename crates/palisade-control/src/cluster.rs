//! The event bus across nodes: [`ClusterBus`] is the [`LocalBus`] of this
//! process plus PostgreSQL `LISTEN`/`NOTIFY` for the events another node must
//! act on ([`Event::to_cluster`]): closing a device's session wherever it is
//! connected, delivering a command queued on another node, and the rest of
//! [`palisade_core::cluster::ClusterEvent`] (the wire form). Each node tags
//! what it sends with its id and ignores its own; a payload that does not
//! parse, is too long or names an unknown event is logged and dropped.

use std::sync::Arc;

use palisade_core::cluster::{self as wire, Envelope};
use palisade_store::notify::{Listener, Notifier};
use palisade_store::{Database, StoreError};
use tokio::sync::mpsc;

use crate::events::{Event, EventBus, LocalBus, Subscription};

/// The PostgreSQL channel the nodes share.
pub const CHANNEL: &str = "palisade_events";
/// Cross-node events waiting to be sent before new ones are dropped (and
/// logged).
const OUTBOX: usize = 4096;

/// This node's bus, joined to the other nodes' through PostgreSQL.
#[derive(Debug)]
pub struct ClusterBus {
    local: Arc<LocalBus>,
    node: String,
    out: mpsc::Sender<String>,
}

impl ClusterBus {
    /// Connects to the database's notifications and starts the tasks that
    /// send this node's cross-node events and hand the others' to the local
    /// bus. `node` names this process among the nodes (unique per process).
    pub async fn start(
        db: &Database,
        node: String,
        capacity: usize,
    ) -> Result<Arc<Self>, StoreError> {
        let local = Arc::new(LocalBus::new(capacity));
        let notifier = Notifier::connect(db).await?;
        let mut listener = Listener::connect(db, CHANNEL).await?;
        let (out, mut rx) = mpsc::channel::<String>(OUTBOX);
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                if let Err(e) = notifier.notify(CHANNEL, &payload).await {
                    tracing::warn!(error = %e, "could not tell the other nodes an event");
                }
            }
        });
        let (inbound, me) = (local.clone(), node.clone());
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(Some(payload)) => receive(&inbound, &me, &payload),
                    Ok(None) => tracing::warn!(
                        "the connection for cross-node events was lost and re-established; events sent meanwhile were missed"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cross-node events: listening failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Arc::new(Self { local, node, out }))
    }
}

/// Hands another node's event to the local bus; drops this node's own and
/// anything that is not a well-formed cross-node event.
fn receive(local: &LocalBus, me: &str, payload: &str) {
    match wire::decode(payload) {
        Ok(env) if env.node == me => {}
        Ok(env) => local.deliver(env.event.into()),
        Err(e) => tracing::warn!(error = %e, "cross-node event dropped"),
    }
}

impl EventBus for ClusterBus {
    fn publish(&self, event: Event) {
        let Some(cross) = event.to_cluster() else {
            self.local.publish(event);
            return;
        };
        let env = Envelope {
            node: self.node.clone(),
            event: cross,
        };
        match wire::encode(&env) {
            Ok(text) => {
                if self.out.try_send(text).is_err() {
                    tracing::warn!("too many cross-node events waiting; one dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cross-node event not sent"),
        }
        if !event.for_other_nodes_only() {
            self.local.publish(event);
        }
    }

    fn subscribe(&self) -> Subscription {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::DeviceId;

    #[tokio::test]
    async fn only_other_nodes_well_formed_cross_node_events_are_taken() {
        let local = LocalBus::new(16);
        let mut sub = local.subscribe();
        let close = Event::CloseSession {
            device: Some(DeviceId::parse("cam-1").unwrap()),
            serial: None,
            reason: "certificate revoked".into(),
        };
        let from = |node: &str, e: &Event| {
            serde_json::to_string(&serde_json::json!({ "node": node, "event": e })).unwrap()
        };
        receive(&local, "me", &from("me", &close));
        receive(&local, "me", "{not json");
        receive(&local, "me", &"x".repeat(wire::MAX_NOTIFY_BYTES + 1));
        receive(
            &local,
            "me",
            r#"{"node":"other","event":{"event":"no_such_event"}}"#,
        );
        receive(
            &local,
            "me",
            &from(
                "other",
                &Event::CommandsSubscribed {
                    device: DeviceId::parse("cam-1").unwrap(),
                },
            ),
        );
        receive(&local, "me", &from("other", &close));
        let got = sub.recv().await.unwrap().unwrap();
        assert!(
            matches!(got, Event::CloseSession { ref reason, .. } if reason == "certificate revoked"),
            "{got:?}"
        );
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.recv())
                .await
                .is_err(),
            "nothing else went through"
        );
    }
}
