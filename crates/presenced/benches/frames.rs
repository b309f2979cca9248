//! Parsing client frames, the gateway's per-message work.
//!
//!     cargo bench -p presenced --bench frames

#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use presenced::protocol::parse_frame;

fn benches(c: &mut Criterion) {
    for (name, frame) in [
        ("activity", r#"{"type": "activity"}"#),
        (
            "status.set with id",
            r#"{"type": "status.set", "status": "away", "id": 7}"#,
        ),
        (
            "subscribe",
            r#"{"type": "subscribe", "scopes": ["zone:10", "org:100"], "users": ["1", "2", "3"], "id": "s1"}"#,
        ),
        ("garbage", r#"{"type": "teleport", "id": 3}"#),
    ] {
        c.bench_function(&format!("parse frame: {name}"), |b| {
            b.iter(|| parse_frame(frame).is_ok())
        });
    }
}

criterion_group!(frames, benches);
criterion_main!(frames);
