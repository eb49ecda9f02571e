//! Wakes a replica's waiters when a shared slot frees on any replica: the release script
//! publishes on the store's `free` channel when it frees a full set, and every replica listens.
//! The same subscription carries operators' actions for the fleet (`fleet`).
//! Waiters also poll, so a message lost while the subscription reconnects costs a poll
//! interval, not a hang.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::{Shared, Side};

/// The longest a waiter sleeps without news before it asks the store again.
const POLL: Duration = Duration::from_millis(250);

pub struct Wake {
    channel: String,
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wake {
    pub fn new(channel: String) -> Self {
        Self {
            channel,
            waiting: Mutex::default(),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn notify(&self, topic: &str) -> Arc<Notify> {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.entry(topic.to_owned()).or_default().clone()
    }

    pub async fn freed(&self, side: Side, name: &str) {
        let topic = match side {
            Side::Lane => format!("l:{name}"),
            Side::Key => format!("k:{name}"),
        };
        let n = self.notify(&topic);
        let _ = tokio::time::timeout(POLL, n.notified()).await;
    }

    fn deliver(&self, topic: &str) {
        let n = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned();
        // One slot freed: one waiter of this replica tries for it.
        if let Some(n) = n {
            n.notify_one();
        }
    }
}

/// Listens on the channel for as long as the store lives, reconnecting after a failure.
pub fn spawn_subscriber(shared: Weak<Shared>, client: redis::Client) {
    tokio::spawn(async move {
        loop {
            let Some(s) = shared.upgrade() else { return };
            let (timeout, channel) = (s.timeout, s.wake.channel.clone());
            let fleet = s.fleet_channel.clone();
            drop(s);
            let connected = tokio::time::timeout(timeout.max(Duration::from_millis(200)), async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                ps.subscribe(&fleet).await?;
                Ok::<_, redis::RedisError>(ps)
            })
            .await;
            if let Ok(Ok(ps)) = connected {
                let mut messages = ps.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(s) = shared.upgrade() else { return };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if msg.get_channel_name() == fleet {
                        // Nobody listening is fine: the replica has no admin API running.
                        let _ = s.actions.send(payload);
                    } else {
                        s.wake.deliver(&payload);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}
