//! The feed replay check: folding the feed from the beginning must give every user's current
//! view (SPEC §4: every change of a view is one event, in the same atomic step). Tests of both
//! stores run it after every scenario; it reads the whole feed, so it is a test and
//! diagnosis tool, not something a node runs.
//!
//! What legitimately differs, and is not compared:
//! - `last_activity`, which moves without events (SPEC §4);
//! - the `last_seen` privacy setting, whose change alone is no event (SPEC §3);
//! - a user whose record is gone while their last event shows them offline: retention
//!   deleted the record (a record gone while its last event shows them present is reported).
//!
//! Events carry the user's true view (with the hiding anchors), and it is compared with the
//! store's true view, so invisible and privacy are checked too. A user with no event at all is
//! not looked at (nothing to compare with), and once the feed was trimmed, or an entry could
//! not be decoded, nothing is compared: the report says the check could not be made.

use std::collections::BTreeMap;

use presence_core::{FeedId, LastSeenVisibility, PresenceView, Status, Store, StoreError, UserId};

/// Events read per call.
const READ_CHUNK: usize = 10_000;

/// Attempts at a quiet moment: the check reads the feed, then the views, then the head
/// again; a store that emitted meanwhile is read again.
const ATTEMPTS: usize = 5;

/// One user whose current view is not what the feed says.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayMismatch {
    /// Whose.
    pub user: UserId,
    /// The view of the user's last event.
    pub from_feed: PresenceView,
    /// The store's view now (`None`: no record).
    pub in_store: Option<PresenceView>,
}

/// What a replay check found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplayReport {
    /// `false` when the feed no longer holds the whole history (it was trimmed, or an entry
    /// could not be decoded): nothing was compared.
    pub checked: bool,
    /// Events folded.
    pub events: u64,
    /// Users compared.
    pub users: u64,
    /// Users whose view differs.
    pub mismatches: Vec<ReplayMismatch>,
}

impl ReplayReport {
    /// Whether the check was made and found nothing.
    pub fn consistent(&self) -> bool {
        self.checked && self.mismatches.is_empty()
    }
}

/// A view with what may differ without an event taken out.
fn comparable(v: &PresenceView) -> PresenceView {
    let mut v = v.clone();
    v.last_activity = None;
    if let Some(p) = v.privacy.as_mut() {
        p.last_seen = LastSeenVisibility::default();
    }
    v
}

/// Folds the feed from the beginning and compares each user's last event with the store's
/// view of them now (see the module documentation).
pub async fn check(store: &dyn Store) -> Result<ReplayReport, StoreError> {
    let mut last = ReplayReport::default();
    for _ in 0..ATTEMPTS {
        let (report, quiet) = check_once(store).await?;
        if quiet {
            return Ok(report);
        }
        last = report;
    }
    Ok(last)
}

async fn check_once(store: &dyn Store) -> Result<(ReplayReport, bool), StoreError> {
    let mut report = ReplayReport::default();
    let mut folded: BTreeMap<UserId, PresenceView> = BTreeMap::new();
    let mut after = FeedId::ZERO;
    loop {
        let read = store.read_feed(after, READ_CHUNK).await?;
        if read.reset || read.skipped > 0 {
            return Ok((report, true));
        }
        report.events += read.events.len() as u64;
        for e in read.events {
            folded.insert(e.user.user_id.clone(), e.user);
        }
        match read.last_id {
            Some(id) => after = id,
            None => break,
        }
    }
    let users: Vec<UserId> = folded.keys().cloned().collect();
    let views = store.views(&users).await?;
    let quiet = store.feed_head().await? == after;
    report.checked = true;
    report.users = users.len() as u64;
    for (user, now) in users.into_iter().zip(views) {
        let from_feed = folded.remove(&user).expect("folded");
        let same = match &now {
            Some(v) => comparable(v) == comparable(&from_feed),
            None => from_feed.status == Status::Offline,
        };
        if !same {
            report.mismatches.push(ReplayMismatch {
                user,
                from_feed,
                in_store: now,
            });
        }
    }
    Ok((report, quiet))
}
