//! The memory store's repair ([`presence_core::repair`]): its indexes are rebuilt from its
//! records and compared with the ones it keeps, under the one lock, so the repair is atomic
//! here.
//!
//! Every index changes only through `State::reindex`, under the same lock as the record, so
//! in this store the indexes cannot drift from the records short of a bug; and a session's
//! node is registered in the step that opens it and forgotten only once its sessions were
//! reaped, so an orphan session cannot arise either. Every kind is checked all the same (the
//! expected indexes are built by that same `reindex`, from empty, for every record): a
//! repair that finds something here has found a bug. Nothing this store keeps outlives its
//! node, so the kinds of leftovers only Redis can hold (a dead node's keys) never apply.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use presence_core::repair::fixed;
use presence_core::{Millis, NodeId, RepairMode, RepairReport, Scope, UserId};

use super::{IndexKeys, MemoryStore, ScopeIndex, State};

/// How two ordered indexes of `(key, member)` differ, by member: (members missing from
/// `actual`, members of `actual` that `expected` lacks, members present under another key).
fn diff<K: Ord + Clone, M: Ord + Clone>(
    expected: &BTreeSet<(K, M)>,
    actual: &BTreeSet<(K, M)>,
) -> (u64, u64, u64) {
    let by_member = |s: &BTreeSet<(K, M)>| {
        let mut m: BTreeMap<M, Vec<K>> = BTreeMap::new();
        for (k, member) in s {
            m.entry(member.clone()).or_default().push(k.clone());
        }
        m
    };
    let (e, a) = (by_member(expected), by_member(actual));
    let (mut missing, mut stale, mut wrong) = (0, 0, 0);
    for (member, keys) in &e {
        match a.get(member) {
            None => missing += 1,
            Some(have) if have != keys => wrong += 1,
            Some(_) => {}
        }
    }
    for (member, keys) in &a {
        if !e.contains_key(member) {
            stale += keys.len() as u64;
        }
    }
    (missing, stale, wrong)
}

fn leases_by_member(
    s: &BTreeSet<(Millis, UserId, presence_core::SessionId)>,
) -> BTreeSet<(Millis, (UserId, presence_core::SessionId))> {
    s.iter()
        .map(|(t, u, id)| (*t, (u.clone(), id.clone())))
        .collect()
}

impl MemoryStore {
    /// See [`presence_core::Store::repair`]. The whole store is checked whatever
    /// `mode.slice` says: it is one pass over maps in memory, under the lock.
    pub(super) fn repair_indexes(&self, mode: RepairMode) -> RepairReport {
        let check = mode.check_only;
        let now = self.now();
        let mut report = RepairReport::default();
        let st = &mut *self.lock();
        // Orphan sessions first, through the ordinary transition (one event where the view
        // changes), so the indexes below are built from what remains.
        let dead: HashSet<NodeId> = st
            .users
            .values()
            .flat_map(|r| r.sessions.values().filter_map(|s| s.node.clone()))
            .filter(|n| !st.nodes.contains_key(n))
            .collect();
        if !dead.is_empty() {
            let users: Vec<UserId> = st
                .users
                .iter()
                .filter(|(_, r)| {
                    r.sessions
                        .values()
                        .any(|s| s.node.as_ref().is_some_and(|n| dead.contains(n)))
                })
                .map(|(u, _)| u.clone())
                .collect();
            for user in users {
                let orphan =
                    |s: &presence_core::Session| s.node.as_ref().is_some_and(|n| dead.contains(n));
                if check {
                    let n = st.users[&user]
                        .sessions
                        .values()
                        .filter(|s| orphan(s))
                        .count();
                    report.add(fixed::ORPHAN_SESSIONS, n as u64);
                } else {
                    let n = self.end_sessions_where(st, &user, now, |_, s| orphan(s));
                    report.add(fixed::ORPHAN_SESSIONS, n as u64);
                }
            }
            if !check {
                self.shared.feed_grew.notify_waiters();
            }
        }
        // What the indexes should hold: the same reindex, from empty, for every record.
        let mut want = State::default();
        for (user, rec) in &st.users {
            want.reindex(user, IndexKeys::default(), IndexKeys::of(Some(rec)));
        }
        report.checked = st.users.len() as u64;
        // Scope sets and their away counts.
        let scopes: BTreeSet<Scope> = want
            .scopes
            .keys()
            .chain(st.scopes.keys())
            .cloned()
            .collect();
        let empty = ScopeIndex::default();
        for scope in &scopes {
            let (w, h) = (
                want.scopes.get(scope).unwrap_or(&empty),
                st.scopes.get(scope).unwrap_or(&empty),
            );
            report.checked += h.by_activity.len() as u64;
            let (missing, stale, wrong) = diff(&w.by_activity, &h.by_activity);
            report.add(fixed::ONLINE_MEMBERS_MISSING, missing);
            report.add(fixed::STALE_MEMBERS, stale);
            report.add(fixed::WRONG_SCORES, wrong);
            report.add(fixed::AWAY_COUNT, u64::from(w.away != h.away));
        }
        // The other indexes.
        for (w, h) in [
            (&want.hidden, &st.hidden),
            (&want.grace, &st.grace),
            (&want.last_seen, &st.last_seen),
            (&want.expiring_custom, &st.expiring_custom),
        ] {
            report.checked += h.len() as u64;
            let (missing, stale, wrong) = diff(w, h);
            report.add(fixed::INDEX_MEMBERS_MISSING, missing);
            report.add(fixed::STALE_MEMBERS, stale);
            report.add(fixed::WRONG_SCORES, wrong);
        }
        report.checked += st.leases.len() as u64;
        let (missing, stale, wrong) = diff(
            &leases_by_member(&want.leases),
            &leases_by_member(&st.leases),
        );
        report.add(fixed::INDEX_MEMBERS_MISSING, missing);
        report.add(fixed::STALE_MEMBERS, stale);
        report.add(fixed::WRONG_SCORES, wrong);
        // The users nearby finds, and where.
        report.checked += st.located.len() as u64;
        for (user, at) in &want.located {
            match st.located.get(user) {
                None => report.add(fixed::INDEX_MEMBERS_MISSING, 1),
                Some(have) if have != at => report.add(fixed::WRONG_SCORES, 1),
                Some(_) => {}
            }
        }
        let stale = st
            .located
            .keys()
            .filter(|u| !want.located.contains_key(*u))
            .count();
        report.add(fixed::STALE_MEMBERS, stale as u64);
        // Nodes: who each lists, and its session count. A node's entry holds its lease too,
        // so only those two are compared and set.
        for (id, ns) in &st.nodes {
            let (users, live) = want
                .nodes
                .get(id)
                .map_or((HashSet::new(), 0), |w| (w.users.clone(), w.live));
            report.add(fixed::NODE_LISTS, u64::from(ns.users != users));
            report.add(fixed::NODE_SESSION_COUNTS, u64::from(ns.live != live));
        }
        if !check {
            st.scopes = want.scopes;
            st.hidden = want.hidden;
            st.grace = want.grace;
            st.leases = want.leases;
            st.last_seen = want.last_seen;
            st.expiring_custom = want.expiring_custom;
            st.located = want.located;
            for (id, ns) in st.nodes.iter_mut() {
                let w = want.nodes.remove(id).unwrap_or_default();
                ns.users = w.users;
                ns.live = w.live;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use presence_core::{
        DeviceKind, ManualClock, OpenSession, Session, SessionId, Status, Store, StoreSettings,
        ZoneId,
    };

    use super::*;

    fn open(user: &str, session: &str, zone: &str) -> OpenSession {
        OpenSession {
            user: UserId::new(user).unwrap(),
            session: SessionId::new(session).unwrap(),
            device: DeviceKind::Web,
            zone: Some(ZoneId::new(zone).unwrap()),
            org: None,
            leased: false,
            invisible: false,
        }
    }

    async fn store() -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_732_616_700_000);
        let s = MemoryStore::new(
            NodeId::new("a").unwrap(),
            Arc::new(clock.clone()),
            StoreSettings::default(),
        );
        s.renew_node_lease(0).await.unwrap();
        s.open_session(open("1", "s1", "10")).await.unwrap();
        s.open_session(open("2", "s2", "10")).await.unwrap();
        s.apply(&UserId::new("2").unwrap(), presence_core::Change::away())
            .await
            .unwrap();
        (s, clock)
    }

    /// Damage done to the state behind the store's back, then: a check reports it and
    /// changes nothing, a repair fixes it, a second check is clean.
    async fn damaged(damage: impl FnOnce(&mut State), what: &str, n: u64) -> MemoryStore {
        let (s, _) = store().await;
        assert!(s.repair(RepairMode::CHECK).await.unwrap().is_clean());
        damage(&mut s.lock());
        let checked = s.repair(RepairMode::CHECK).await.unwrap();
        assert_eq!(checked.count(what), n, "{checked:?}");
        assert_eq!(
            s.repair(RepairMode::CHECK).await.unwrap(),
            checked,
            "a check changes nothing"
        );
        assert_eq!(
            s.repair(RepairMode::FIX).await.unwrap().fixed,
            checked.fixed
        );
        let again = s.repair(RepairMode::CHECK).await.unwrap();
        assert!(again.is_clean(), "{again:?}");
        s
    }

    fn zone10() -> Scope {
        Scope::Zone(ZoneId::new("10").unwrap())
    }

    #[tokio::test]
    async fn a_missing_scope_member_a_stale_one_and_a_wrong_score_are_fixed() {
        let s = damaged(
            |st| {
                let ix = st.scopes.get_mut(&zone10()).unwrap();
                let first = ix.by_activity.pop_first().unwrap();
                ix.by_activity.insert((first.0 + 5, first.1));
                st.scopes
                    .get_mut(&Scope::Global)
                    .unwrap()
                    .by_activity
                    .insert((1, UserId::new("ghost").unwrap()));
                st.hidden.insert((1, UserId::new("1").unwrap()));
            },
            fixed::WRONG_SCORES,
            1,
        )
        .await;
        let counts = s.counts(&[Scope::Global, zone10()]).await.unwrap();
        assert_eq!((counts[0].total, counts[1].total), (2, 2));
        assert!(s.lock().hidden.is_empty());
    }

    #[tokio::test]
    async fn the_nearby_index_is_rebuilt_from_the_records() {
        let at = presence_core::Location::new(52.52, 13.405).unwrap();
        let s = damaged(
            |st| {
                // A location written to a record behind the index's back, and a ghost entry.
                st.users
                    .get_mut(&UserId::new("1").unwrap())
                    .unwrap()
                    .location = Some(at);
                st.located.insert(UserId::new("ghost").unwrap(), (at, None));
            },
            fixed::INDEX_MEMBERS_MISSING,
            1,
        )
        .await;
        let st = s.lock();
        assert_eq!(
            st.located.keys().map(UserId::as_str).collect::<Vec<_>>(),
            ["1"]
        );
        assert_eq!(st.located[&UserId::new("1").unwrap()].0, at.cell_centre());
    }

    #[tokio::test]
    async fn a_wrong_away_count_is_recounted() {
        let s = damaged(
            |st| st.scopes.get_mut(&Scope::Global).unwrap().away = 99,
            fixed::AWAY_COUNT,
            1,
        )
        .await;
        assert_eq!(s.counts(&[Scope::Global]).await.unwrap()[0].away, 1);
    }

    #[tokio::test]
    async fn node_lists_and_counts_are_rebuilt() {
        let s = damaged(
            |st| {
                let n = st.nodes.get_mut(&NodeId::new("a").unwrap()).unwrap();
                n.users.clear();
                n.live += 5;
            },
            fixed::NODE_SESSION_COUNTS,
            1,
        )
        .await;
        assert_eq!(s.node_session_count().await.unwrap(), 2);
        assert_eq!(s.node_sessions().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_orphan_session_is_ended_with_one_event() {
        let (s, _) = store().await;
        let user = UserId::new("1").unwrap();
        // A session of a node the store never registered (only damage makes one), shown in
        // the devices as a session's device is.
        {
            let mut st = s.lock();
            let rec = st.users.get_mut(&user).unwrap();
            rec.devices.insert(DeviceKind::Mobile);
            rec.sessions.insert(
                SessionId::new("ghost").unwrap(),
                Session {
                    node: Some(NodeId::new("gone").unwrap()),
                    device: DeviceKind::Mobile,
                    lease_until: None,
                    opened: None,
                },
            );
        }
        let head = s.feed_head().await.unwrap();
        let checked = s.repair(RepairMode::CHECK).await.unwrap();
        assert_eq!(checked.count(fixed::ORPHAN_SESSIONS), 1);
        assert_eq!(s.read_feed(head, 10).await.unwrap().events.len(), 0);
        let fixed_ = s.repair(RepairMode::FIX).await.unwrap();
        assert_eq!(fixed_.count(fixed::ORPHAN_SESSIONS), 1);
        let events = s.read_feed(head, 10).await.unwrap().events;
        assert_eq!(events.len(), 1, "one event: the device went");
        assert!(!events[0].user.devices.contains(DeviceKind::Mobile));
        let view = s.view(&user).await.unwrap().unwrap();
        assert_eq!(view.status, Status::Online, "its own session stays");
        assert!(s.repair(RepairMode::CHECK).await.unwrap().is_clean());
    }
}
