//! Webhook delivery leases (SPEC §9 `[webhooks]`): which node delivers an endpoint's events,
//! and how far along the feed it got.
//!
//! Every node knows every endpoint (they are configuration); the store keeps, per endpoint,
//! one lease: the node delivering to it, until when, and the last feed id it acknowledged.
//! A node claims the lease, renews it while it delivers, and acknowledges what it delivered;
//! when it dies, its lease lapses and another node claims it and resumes after the last
//! acknowledged id. [`WebhookLeaseTable`] is the rule, kept in process by the memory store;
//! the Redis store runs the same rule in Lua (`lua/webhook_*.lua`).

use std::collections::HashMap;
use std::fmt;

use crate::event::FeedId;
use crate::ids::{IdError, NodeId, validate_id};
use crate::time::Millis;

/// Most bytes of the delivery report a holder stores with its lease ([`Store::claim_webhook`]);
/// a longer one is cut (at a character boundary).
///
/// [`Store::claim_webhook`]: crate::Store::claim_webhook
pub const MAX_WEBHOOK_REPORT_BYTES: usize = 2048;

/// An endpoint's id: the same on every node for the same endpoint (the service derives it
/// from the URL). 1–64 bytes of the id charset (SPEC §2).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(String);

impl EndpointId {
    /// Validates and wraps `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        validate_id("endpoint_id", &s)?;
        Ok(Self(s))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointId({:?})", self.0)
    }
}

/// One endpoint's lease as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookLease {
    /// The node delivering, `None` once released (or never claimed).
    pub holder: Option<NodeId>,
    /// Until when the holder's lease runs (ms); a lapsed lease may be claimed by any node.
    pub lease_until: Millis,
    /// Every event up to here was delivered (or given up on): a new holder resumes after it.
    pub acked: FeedId,
    /// What the last holder reported at its last renewal (opaque to the store; the service
    /// writes JSON), if it reported anything.
    pub report: Option<String>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookClaim {
    /// This node holds the lease until `until`: it delivers the events after `acked`. An
    /// endpoint claimed for the first time starts at the feed's head then.
    Held {
        /// The last acknowledged feed id.
        acked: FeedId,
        /// Until when the lease runs.
        until: Millis,
    },
    /// Another node holds it.
    Taken {
        /// Who.
        holder: NodeId,
        /// Until when.
        until: Millis,
    },
}

/// A report cut to [`MAX_WEBHOOK_REPORT_BYTES`].
pub fn bounded_report(report: &str) -> &str {
    if report.len() <= MAX_WEBHOOK_REPORT_BYTES {
        return report;
    }
    let mut end = MAX_WEBHOOK_REPORT_BYTES;
    while !report.is_char_boundary(end) {
        end -= 1;
    }
    &report[..end]
}

/// The leases of every endpoint, in process: the memory store's, and the rule the Redis
/// scripts follow. One entry per endpoint ever claimed (endpoints are configuration, so few).
#[derive(Debug, Default)]
pub struct WebhookLeaseTable {
    leases: HashMap<EndpointId, WebhookLease>,
}

impl WebhookLeaseTable {
    /// `node` claims or renews `endpoint`'s lease at `now` until `until`. It gets it when
    /// nobody holds it, when the holder's lease lapsed (`lease_until < now`), or when it holds
    /// it already (a renewal; a lapsed lease nobody else took is still its own). An endpoint
    /// never claimed before starts with `acked` = `head`, the feed's newest id. `report`
    /// (when given) replaces the stored one.
    pub fn claim(
        &mut self,
        endpoint: &EndpointId,
        node: &NodeId,
        now: Millis,
        until: Millis,
        head: FeedId,
        report: Option<&str>,
    ) -> WebhookClaim {
        let lease = self
            .leases
            .entry(endpoint.clone())
            .or_insert_with(|| WebhookLease {
                holder: None,
                lease_until: 0,
                acked: head,
                report: None,
            });
        if let Some(holder) = &lease.holder
            && holder != node
            && lease.lease_until >= now
        {
            return WebhookClaim::Taken {
                holder: holder.clone(),
                until: lease.lease_until,
            };
        }
        lease.holder = Some(node.clone());
        lease.lease_until = until;
        if let Some(r) = report {
            lease.report = Some(bounded_report(r).to_string());
        }
        WebhookClaim::Held {
            acked: lease.acked,
            until,
        }
    }

    /// `node` acknowledges every event up to `upto`. Only the holder may (`false`
    /// otherwise: it lost the lease, and must stop delivering); the acknowledged id never
    /// moves back (an older `upto` changes nothing and still answers `true`).
    pub fn ack(&mut self, endpoint: &EndpointId, node: &NodeId, upto: FeedId) -> bool {
        match self.leases.get_mut(endpoint) {
            Some(lease) if lease.holder.as_ref() == Some(node) => {
                lease.acked = lease.acked.max(upto);
                true
            }
            _ => false,
        }
    }

    /// `node` gives the lease up (a graceful shutdown), so another node may claim it at once.
    /// A lease held by another node is left alone.
    pub fn release(&mut self, endpoint: &EndpointId, node: &NodeId) {
        if let Some(lease) = self.leases.get_mut(endpoint)
            && lease.holder.as_ref() == Some(node)
        {
            lease.holder = None;
            lease.lease_until = 0;
        }
    }

    /// `endpoint`'s lease, if it was ever claimed.
    pub fn get(&self, endpoint: &EndpointId) -> Option<WebhookLease> {
        self.leases.get(endpoint).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_WEBHOOK_REPORT_BYTES);
        let cut = bounded_report(&long);
        assert!(cut.len() <= MAX_WEBHOOK_REPORT_BYTES && cut.len() > MAX_WEBHOOK_REPORT_BYTES - 2);
        assert_eq!(bounded_report("short"), "short");
    }

    #[test]
    fn endpoint_ids_follow_the_id_rules() {
        assert!(EndpointId::new("0123abcd").is_ok());
        assert!(EndpointId::new("").is_err());
        assert!(EndpointId::new("a|b").is_err());
    }
}
