//! What replicas tell each other for one admin view of the fleet: each publishes its state (the
//! requests it holds, its lanes) under its own key, refreshed twice a second and gone three
//! seconds after it stops; an operator's action on one replica is published on the fleet's
//! channel, and the replicas it concerns answer under the action's own key.

use std::time::Duration;

use redis::AsyncCommands;

use crate::{health, Store};

/// A replica's state outlives its last refresh by this long, then the fleet forgets it.
const STATE_TTL: Duration = Duration::from_secs(3);
/// Replies to an action are kept this long for the replica that asked.
const REPLY_TTL: Duration = Duration::from_secs(10);
/// At most this many replicas are read.
const MAX_REPLICAS: usize = 256;

impl Store {
    /// This replica's name in the fleet.
    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    fn state_key(&self, replica: &str) -> String {
        format!("{}:fleet:state:{replica}", self.shared.ns)
    }

    /// Publishes this replica's state (JSON).
    pub async fn publish_state(&self, state: String) {
        let s = &self.shared;
        if !s.health.is_up() {
            return;
        }
        let (k, mut conn) = (self.state_key(&s.replica), s.conn.clone());
        let ms = STATE_TTL.as_millis() as u64;
        let _ = health::bounded(s, "publish the replica's state", async move {
            redis::cmd("SET")
                .arg(k)
                .arg(state)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut conn)
                .await
        })
        .await;
    }

    /// The states the other replicas published (JSON each).
    pub async fn fleet_states(&self) -> Vec<String> {
        let s = &self.shared;
        if !s.health.is_up() {
            return Vec::new();
        }
        let mut conn = s.conn.clone();
        let pattern = format!("{}:fleet:state:*", s.ns);
        let own = self.state_key(&s.replica);
        let keys = health::bounded(s, "list the fleet", async move {
            let mut keys: Vec<String> = Vec::new();
            let mut cursor = 0u64;
            // SCAN in bounded rounds: a fleet is small, the keyspace may not be.
            for _ in 0..1000 {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 || keys.len() >= MAX_REPLICAS {
                    break;
                }
            }
            Ok(keys)
        })
        .await
        .unwrap_or_default();
        let keys: Vec<String> = keys.into_iter().filter(|k| *k != own).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let mut conn = s.conn.clone();
        let states = health::bounded(s, "read the fleet", async move {
            conn.mget::<_, Vec<Option<String>>>(keys).await
        })
        .await
        .unwrap_or_default();
        states.into_iter().flatten().collect()
    }

    /// Publishes an operator's action (JSON) to every replica.
    pub async fn broadcast(&self, action: String) {
        let s = &self.shared;
        if !s.health.is_up() {
            return;
        }
        let (channel, mut conn) = (s.fleet_channel.clone(), s.conn.clone());
        let _ = health::bounded(s, "publish an action", async move {
            conn.publish::<_, _, ()>(channel, action).await
        })
        .await;
    }

    /// The actions other replicas publish, as they come.
    pub fn actions(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.shared.actions.subscribe()
    }

    fn reply_key(&self, action: &str) -> String {
        format!("{}:fleet:reply:{action}", self.shared.ns)
    }

    /// Answers the action named `action` (JSON).
    pub async fn reply(&self, action: &str, answer: String) {
        let s = &self.shared;
        let (k, mut conn) = (self.reply_key(action), s.conn.clone());
        let secs = REPLY_TTL.as_secs() as i64;
        let _ = health::bounded(s, "answer an action", async move {
            redis::pipe()
                .rpush(&k, answer)
                .expire(&k, secs)
                .query_async::<()>(&mut conn)
                .await
        })
        .await;
    }

    /// The answers to the action named `action` so far.
    pub async fn replies(&self, action: &str) -> Vec<String> {
        let s = &self.shared;
        let (k, mut conn) = (self.reply_key(action), s.conn.clone());
        health::bounded(s, "read the answers to an action", async move {
            conn.lrange::<_, Vec<String>>(k, 0, MAX_REPLICAS as isize)
                .await
        })
        .await
        .unwrap_or_default()
    }
}
