//! Webhook delivery leases (SPEC §9), the same scenarios against both stores: one holder at a
//! time, a lapsed lease taken over with the acknowledged id, acknowledgements only by the
//! holder and never backwards, a fresh endpoint starting at the feed's head.

mod common;

use std::time::Duration;

use common::*;
use presence_core::*;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Redis).await })*
        }
    };
}

conformance!(
    one_node_holds_an_endpoint_and_a_second_is_refused_while_it_does,
    a_lapsed_lease_is_taken_over_with_the_acknowledged_id,
    only_the_holder_acknowledges_and_never_backwards,
    a_released_lease_is_claimed_at_once,
    a_fresh_endpoint_starts_at_the_feed_head,
    the_report_is_kept_and_cut_to_its_bound,
);

const LEASE: Duration = Duration::from_secs(3);

fn ep(s: &str) -> EndpointId {
    EndpointId::new(s).unwrap()
}

fn acked_of(c: &WebhookClaim) -> FeedId {
    match c {
        WebhookClaim::Held { acked, .. } => *acked,
        WebhookClaim::Taken { .. } => panic!("expected the lease, got {c:?}"),
    }
}

async fn one_node_holds_an_endpoint_and_a_second_is_refused_while_it_does(kind: Kind) {
    let k = Kit::new(kind).await;
    let (a, b) = (k.node("node-a"), k.node("node-b"));
    let e = ep("e1");
    let held = a.claim_webhook(&e, LEASE, None).await.unwrap();
    assert!(matches!(held, WebhookClaim::Held { until, .. } if until == k.now() + 3000));
    assert_eq!(
        b.claim_webhook(&e, LEASE, None).await.unwrap(),
        WebhookClaim::Taken {
            holder: node("node-a"),
            until: k.now() + 3000
        }
    );
    // Renewing moves the lease on; the other node is still refused, up to the last ms.
    k.clock.advance(Duration::from_secs(2));
    assert!(matches!(
        a.claim_webhook(&e, LEASE, None).await.unwrap(),
        WebhookClaim::Held { .. }
    ));
    k.clock.advance(LEASE);
    assert!(matches!(
        b.claim_webhook(&e, LEASE, None).await.unwrap(),
        WebhookClaim::Taken { .. }
    ));
    // Another endpoint is another lease.
    assert!(matches!(
        b.claim_webhook(&ep("e2"), LEASE, None).await.unwrap(),
        WebhookClaim::Held { .. }
    ));
    let leases = b
        .webhook_leases(&[e.clone(), ep("e2"), ep("never")])
        .await
        .unwrap();
    assert_eq!(leases[0].as_ref().unwrap().holder, Some(node("node-a")));
    assert_eq!(leases[1].as_ref().unwrap().holder, Some(node("node-b")));
    assert_eq!(leases[2], None);
}

async fn a_lapsed_lease_is_taken_over_with_the_acknowledged_id(kind: Kind) {
    let k = Kit::new(kind).await;
    let (a, b) = (k.node("node-a"), k.node("node-b"));
    let e = ep("e1");
    let start = acked_of(&a.claim_webhook(&e, LEASE, None).await.unwrap());
    let later = FeedId {
        ms: start.ms + 5,
        seq: 2,
    };
    assert!(a.ack_webhook(&e, later).await.unwrap());
    k.clock.advance(LEASE + Duration::from_millis(1));
    // node-a is gone: node-b takes over where it left off.
    let taken = b.claim_webhook(&e, LEASE, None).await.unwrap();
    assert_eq!(acked_of(&taken), later);
    // node-a comes back: its renewal fails, its acknowledgement too.
    assert_eq!(
        a.claim_webhook(&e, LEASE, None).await.unwrap(),
        WebhookClaim::Taken {
            holder: node("node-b"),
            until: k.now() + 3000
        }
    );
    let further = FeedId {
        ms: later.ms + 1,
        seq: 0,
    };
    assert!(!a.ack_webhook(&e, further).await.unwrap());
    let lease = b
        .webhook_leases(&[e])
        .await
        .unwrap()
        .pop()
        .flatten()
        .unwrap();
    assert_eq!(lease.acked, later, "a non-holder's ack changed nothing");
}

async fn only_the_holder_acknowledges_and_never_backwards(kind: Kind) {
    let k = Kit::new(kind).await;
    let (a, b) = (k.node("node-a"), k.node("node-b"));
    let e = ep("e1");
    let id = |ms, seq| FeedId { ms, seq };
    assert!(
        !a.ack_webhook(&e, id(9, 0)).await.unwrap(),
        "nobody claimed it yet"
    );
    a.claim_webhook(&e, LEASE, None).await.unwrap();
    assert!(!b.ack_webhook(&e, id(50, 0)).await.unwrap());
    assert!(a.ack_webhook(&e, id(10, 3)).await.unwrap());
    assert!(a.ack_webhook(&e, id(10, 2)).await.unwrap());
    assert!(a.ack_webhook(&e, id(9, 99)).await.unwrap());
    let acked = |k: &Kit| {
        let e = e.clone();
        let s = k.node("node-x");
        async move {
            s.webhook_leases(&[e]).await.unwrap()[0]
                .clone()
                .unwrap()
                .acked
        }
    };
    assert_eq!(acked(&k).await, id(10, 3), "never backwards");
    // Sequence numbers compare as numbers, not text.
    assert!(a.ack_webhook(&e, id(10, 11)).await.unwrap());
    assert_eq!(acked(&k).await, id(10, 11));
    assert!(a.ack_webhook(&e, id(11, 0)).await.unwrap());
    assert_eq!(acked(&k).await, id(11, 0));
}

async fn a_released_lease_is_claimed_at_once(kind: Kind) {
    let k = Kit::new(kind).await;
    let (a, b) = (k.node("node-a"), k.node("node-b"));
    let e = ep("e1");
    a.claim_webhook(&e, LEASE, None).await.unwrap();
    // A release by a node that does not hold it changes nothing.
    b.release_webhook(&e).await.unwrap();
    assert!(matches!(
        b.claim_webhook(&e, LEASE, None).await.unwrap(),
        WebhookClaim::Taken { .. }
    ));
    a.release_webhook(&e).await.unwrap();
    let lease = b.webhook_leases(std::slice::from_ref(&e)).await.unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(lease.holder, None);
    assert!(matches!(
        b.claim_webhook(&e, LEASE, None).await.unwrap(),
        WebhookClaim::Held { .. }
    ));
    assert!(!a.ack_webhook(&e, FeedId { ms: 1, seq: 0 }).await.unwrap());
}

async fn a_fresh_endpoint_starts_at_the_feed_head(kind: Kind) {
    let k = Kit::new(kind).await;
    let a = k.node("node-a");
    assert_eq!(
        acked_of(&a.claim_webhook(&ep("before"), LEASE, None).await.unwrap()),
        FeedId::ZERO,
        "an empty feed's head"
    );
    k.open("1", "s1").await;
    k.open("2", "s1").await;
    let head = k.store.feed_head().await.unwrap();
    assert_ne!(head, FeedId::ZERO);
    assert_eq!(
        acked_of(&a.claim_webhook(&ep("after"), LEASE, None).await.unwrap()),
        head
    );
    // An endpoint claimed before keeps its own position.
    assert_eq!(
        acked_of(&a.claim_webhook(&ep("before"), LEASE, None).await.unwrap()),
        FeedId::ZERO
    );
}

async fn the_report_is_kept_and_cut_to_its_bound(kind: Kind) {
    let k = Kit::new(kind).await;
    let a = k.node("node-a");
    let e = ep("e1");
    a.claim_webhook(&e, LEASE, Some("{\"n\":1}")).await.unwrap();
    a.claim_webhook(&e, LEASE, None).await.unwrap();
    let report = |k: &Kit| {
        let e = e.clone();
        let s = k.node("node-x");
        async move {
            s.webhook_leases(&[e]).await.unwrap()[0]
                .clone()
                .unwrap()
                .report
        }
    };
    assert_eq!(
        report(&k).await.as_deref(),
        Some("{\"n\":1}"),
        "no report keeps it"
    );
    let long = "x".repeat(webhook::MAX_WEBHOOK_REPORT_BYTES + 100);
    a.claim_webhook(&e, LEASE, Some(&long)).await.unwrap();
    assert_eq!(
        report(&k).await.map(|r| r.len()),
        Some(webhook::MAX_WEBHOOK_REPORT_BYTES)
    );
}
