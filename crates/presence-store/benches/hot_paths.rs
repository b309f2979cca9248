//! Hot paths of the store layer on the memory store: a session open + close, a batch of
//! activity, a page of a 10,000-user zone, and encoding an event to JSON.
//!
//!     cargo bench -p presence-store --bench hot_paths

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use presence_core::*;
use presence_store::MemoryStore;

fn store() -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new(1_732_616_700_000);
    let settings = StoreSettings {
        offline_grace: Duration::ZERO,
        ..Default::default()
    };
    (
        MemoryStore::new(
            NodeId::new("bench").unwrap(),
            Arc::new(clock.clone()),
            settings,
        ),
        clock,
    )
}

fn open(user: u64, zone: &str) -> OpenSession {
    OpenSession {
        user: UserId::new(user.to_string()).unwrap(),
        session: SessionId::new("s1").unwrap(),
        device: DeviceKind::Web,
        zone: Some(ZoneId::new(zone).unwrap()),
        org: None,
        leased: false,
        invisible: false,
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (s, clock) = store();
    rt.block_on(async {
        for u in 0..10_000 {
            s.open_session(open(u, "big")).await.unwrap();
        }
    });

    c.bench_function("memory: open + close a session (with events)", |b| {
        b.to_async(&rt).iter(|| async {
            let a = s.open_session(open(1_000_000, "small")).await.unwrap();
            s.close_session(&a.view.user_id, &SessionId::new("s1").unwrap())
                .await
                .unwrap();
        })
    });

    let batch: Vec<Activity> = (0..500)
        .map(|u| Activity {
            user: UserId::new(u.to_string()).unwrap(),
            at: 0,
        })
        .collect();
    c.bench_function("memory: activity for 500 users", |b| {
        b.to_async(&rt).iter(|| {
            clock.advance(Duration::from_millis(1));
            let now = clock.now_ms();
            let batch: Vec<Activity> = batch
                .iter()
                .map(|a| Activity {
                    user: a.user.clone(),
                    at: now,
                })
                .collect();
            let s = &s;
            async move { s.record_activity(&batch).await.unwrap() }
        })
    });

    let zone = Scope::Zone(ZoneId::new("big").unwrap());
    c.bench_function("memory: first page of 100 in a 10,000-user zone", |b| {
        b.to_async(&rt).iter(|| async {
            s.list(
                &zone,
                &ListQuery {
                    limit: 100,
                    cursor: None,
                    status: None,
                },
            )
            .await
            .unwrap()
        })
    });

    let event = rt
        .block_on(s.open_session(open(2_000_000, "z")))
        .unwrap()
        .event
        .unwrap();
    c.bench_function("encode a presence event to JSON", |b| {
        b.iter(|| serde_json::to_string(&event).unwrap())
    });
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
