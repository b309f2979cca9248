//! Webhook delivery leases in Redis: one hash per endpoint, `webhook:{endpoint}` (after the
//! prefix), with `holder`, `until` (ms), `acked` (feed id) and `report`. Claim, ack and release
//! are one Lua script each (`lua/webhook_*.lua`), following the rule of
//! `presence_core::WebhookLeaseTable`, so a node that lost the lease can neither renew it nor
//! acknowledge. The hash carries no TTL: an endpoint removed from the configuration leaves
//! one small hash behind (`redis-cli DEL` it).

use std::sync::LazyLock;
use std::time::Duration;

use presence_core::settings::ms;
use presence_core::webhook::bounded_report;
use presence_core::{EndpointId, FeedId, NodeId, StoreError, WebhookClaim, WebhookLease};
use redis::{Script, Value};

use super::RedisStore;
use super::failure::store_error;

/// The scripts, built once per process (invoking one loads it into Redis when missing).
struct WebhookScripts {
    claim: Script,
    ack: Script,
    release: Script,
}

static SCRIPTS: LazyLock<WebhookScripts> = LazyLock::new(|| WebhookScripts {
    claim: script!("webhook_claim.lua"),
    ack: script!("webhook_ack.lua"),
    release: script!("webhook_release.lua"),
});

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("webhook lease: {what}"))
}

fn text(v: &Value) -> Result<Option<String>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| corrupt("non-UTF-8 string")),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::Int(i) => Ok(Some(i.to_string())),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

fn required(v: &Value, what: &str) -> Result<String, StoreError> {
    text(v)?.ok_or_else(|| corrupt(format_args!("{what} missing")))
}

fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

fn feed_id(s: &str) -> Result<FeedId, StoreError> {
    s.parse().map_err(corrupt)
}

fn millis(s: &str) -> Result<i64, StoreError> {
    s.parse()
        .map_err(|_| corrupt(format_args!("{s:?} is not ms")))
}

fn node(s: &str) -> Result<NodeId, StoreError> {
    NodeId::new(s).map_err(corrupt)
}

impl RedisStore {
    pub(crate) async fn claim_webhook_lease(
        &self,
        endpoint: &EndpointId,
        lease: Duration,
        report: Option<&str>,
    ) -> Result<WebhookClaim, StoreError> {
        let now = self.now();
        let mut inv = self.invocation(&SCRIPTS.claim, now);
        inv.arg(endpoint.as_str())
            .arg(self.node.as_str())
            .arg(now + ms(lease))
            .arg(report.map_or("", bounded_report));
        let reply = self.invoke(&inv).await?;
        let a = array(&reply)?;
        let [flag, who_or_acked, until] = a else {
            return Err(corrupt("claim answered the wrong shape"));
        };
        let until = millis(&required(until, "until")?)?;
        match flag {
            Value::Int(1) => Ok(WebhookClaim::Held {
                acked: feed_id(&required(who_or_acked, "acked")?)?,
                until,
            }),
            Value::Int(0) => Ok(WebhookClaim::Taken {
                holder: node(&required(who_or_acked, "holder")?)?,
                until,
            }),
            other => Err(corrupt(format_args!("claim flag {other:?}"))),
        }
    }

    pub(crate) async fn ack_webhook_lease(
        &self,
        endpoint: &EndpointId,
        upto: FeedId,
    ) -> Result<bool, StoreError> {
        let mut inv = self.invocation(&SCRIPTS.ack, self.now());
        inv.arg(endpoint.as_str())
            .arg(self.node.as_str())
            .arg(upto.to_string());
        match self.invoke(&inv).await? {
            Value::Int(n) => Ok(n == 1),
            other => Err(corrupt(format_args!("ack answered {other:?}"))),
        }
    }

    pub(crate) async fn release_webhook_lease(
        &self,
        endpoint: &EndpointId,
    ) -> Result<(), StoreError> {
        let mut inv = self.invocation(&SCRIPTS.release, self.now());
        inv.arg(endpoint.as_str()).arg(self.node.as_str());
        self.invoke(&inv).await.map(|_| ())
    }

    pub(crate) async fn webhook_lease_states(
        &self,
        endpoints: &[EndpointId],
    ) -> Result<Vec<Option<WebhookLease>>, StoreError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for e in endpoints {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("webhook:{e}")))
                .arg("holder")
                .arg("until")
                .arg("acked")
                .arg("report");
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        replies.iter().map(decode_lease).collect()
    }
}

fn decode_lease(reply: &Value) -> Result<Option<WebhookLease>, StoreError> {
    let a = array(reply)?;
    let [holder, until, acked, report] = a else {
        return Err(corrupt("HMGET answered the wrong shape"));
    };
    let Some(acked) = text(acked)? else {
        return Ok(None);
    };
    Ok(Some(WebhookLease {
        holder: match text(holder)?.filter(|h| !h.is_empty()) {
            Some(h) => Some(node(&h)?),
            None => None,
        },
        lease_until: text(until)?.map_or(Ok(0), |u| millis(&u))?,
        acked: feed_id(&acked)?,
        report: text(report)?,
    }))
}
