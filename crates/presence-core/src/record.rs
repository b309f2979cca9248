//! A user's stored presence and the rules of SPEC §3 that change it.
//!
//! [`UserRecord`] is what a store keeps per user. Its methods are the transitions; each one only
//! mutates the record. [`UserRecord::finish`] then compares the public view before and after:
//! if anything other than `last_activity` changed, it bumps `version` and returns the one event
//! for the change. So a store runs "mutate, then finish" inside one atomic step, and every
//! visible change has exactly one event.
//!
//! The Redis store's Lua scripts implement the same rules; the conformance suite and the
//! property test hold both stores to a separate reference model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Onlookers, PresenceEvent};
use crate::geo::Location;
use crate::ids::{NodeId, OrgId, SessionId, UserId, ZoneId};
use crate::time::Millis;
use crate::view::{
    AwayReason, CustomStatus, DeviceKind, DeviceSet, Hidden, LastSeen, LastSeenVisibility,
    PresenceView, PresenceVisibility, Privacy, Status,
};

/// When a user stops hiding from some onlookers, their `version` jumps to the next multiple of
/// this: the jump tells those onlookers that changes were made while hidden, not how many
/// (fewer than this many). Every client handles versions as numbers below 2^53.
pub const VERSION_STRIDE: u64 = 1024;

/// JSON object held as metadata.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// One live session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The node holding the WebSocket; `None` for a REST heartbeat session, which belongs to no
    /// node and ends only by its lease.
    pub node: Option<NodeId>,
    /// What the session runs on.
    pub device: DeviceKind,
    /// For REST heartbeat sessions: when the lease runs out.
    pub lease_until: Option<Millis>,
    /// When it opened, to the second ([`Session::opened_at`]); `None` for a session a store
    /// wrote before sessions kept their open time.
    pub opened: Option<Millis>,
}

impl Session {
    /// A session's open time as the stores keep it: `now` rounded down to the second. Whole
    /// seconds take a few bytes less per session in Redis, where a typical online user's hash
    /// sits just under a jemalloc size class; "connected since" needs no more.
    pub fn opened_at(now: Millis) -> Millis {
        now.div_euclid(1000) * 1000
    }
}

/// A change a user (or a service acting for one) asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `status.set`: manual away (sticks until the user sets online, across reconnects), or
    /// back online (clears manual away and counts as activity); and, when `invisible` is
    /// given, going invisible or visible in the same step (one event). Invisible needs a
    /// present user: it is ignored while offline.
    SetStatus {
        /// Away (manual) rather than online.
        away: bool,
        /// Go invisible (`true`) or visible again (`false`); `None` leaves it.
        invisible: Option<bool>,
    },
    /// Move to a zone, or leave zones.
    SetZone(Option<ZoneId>),
    /// Move to an org, or leave orgs.
    SetOrg(Option<OrgId>),
    /// Replace the metadata object (or clear it).
    SetMetadata(Option<Metadata>),
    /// Set (replace) the custom status; `status` is left alone. Validate it first with
    /// [`CustomStatus::problem`]; empty `text`/`emoji` are stored as `None`.
    SetCustomStatus(CustomStatus),
    /// Clear the custom status; `status` is left alone.
    ClearCustomStatus,
    /// Change the privacy settings given (`None` keeps one). Hiding from more onlookers looks
    /// to them like going offline, hiding from fewer like coming online; a `last_seen` change
    /// alone is no event.
    SetPrivacy {
        /// Who sees the presence.
        presence: Option<PresenceVisibility>,
        /// How others see last seen.
        last_seen: Option<LastSeenVisibility>,
    },
    /// Share a location for `nearby` (`Some`) or stop sharing it (`None`). It is not part of
    /// the view, so it is never an event. A location lasts as long as the presence: going
    /// offline forgets it, and setting one while offline is ignored (nobody is there to be
    /// found).
    SetLocation(Option<Location>),
}

impl Change {
    /// Manual away, visibility unchanged.
    pub fn away() -> Self {
        Change::SetStatus {
            away: true,
            invisible: None,
        }
    }

    /// Back online, visibility unchanged.
    pub fn online() -> Self {
        Change::SetStatus {
            away: false,
            invisible: None,
        }
    }
}

/// A transition refused by the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The user already holds `sessions_per_user` sessions.
    #[error("user already has {limit} sessions")]
    TooManySessions {
        /// The limit in force.
        limit: usize,
    },
    /// A session with that id is already open.
    #[error("session {0} is already open")]
    SessionExists(SessionId),
    /// The service ended that session ([`crate::Store::end_session`]) a short while ago: it
    /// may not open again, so the node holding its socket closes the socket instead of
    /// re-asserting the session.
    #[error("session {0} was ended by the service")]
    SessionEnded(SessionId),
}

/// What a user's record holds. Invariant: `status == Offline` exactly when there is no session
/// and no pending grace. It serializes whole, for the memory store's snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Whose record.
    pub user_id: UserId,
    /// Current status.
    pub status: Status,
    /// Set while away.
    pub away_reason: Option<AwayReason>,
    /// The user chose away; kept while offline so it applies on the next session.
    pub manual_away: bool,
    /// Last counted activity.
    pub last_activity: Millis,
    /// When the last session ended (shown only while offline).
    pub last_seen: Option<Millis>,
    /// Current zone.
    pub zone_id: Option<ZoneId>,
    /// Current org.
    pub org_id: Option<OrgId>,
    /// Device kinds of the open sessions; kept unchanged through the grace so a reload shows
    /// nothing.
    pub devices: DeviceSet,
    /// Metadata object.
    pub metadata: Option<Metadata>,
    /// The custom status; kept while offline, until cleared, expired or the record deleted.
    pub custom_status: Option<CustomStatus>,
    /// The user chose invisible (SPEC §3): everyone but the user and privileged tokens sees
    /// them offline. It lasts until the user sets it off, or until a session opens after they
    /// went offline (a reload within the grace keeps it); it stays on while offline, so that
    /// going offline shows others nothing and `last_seen` stays the moment they went
    /// invisible.
    pub invisible: bool,
    /// Privacy settings; kept as long as the record.
    pub privacy: Privacy,
    /// While the user hides from onlookers outside their org (invisible, privacy `org` or
    /// `nobody`): what those see. Kept in step by [`UserRecord::finish`].
    pub hidden: Option<Hidden>,
    /// While the user hides from their org's members too (invisible, privacy `nobody`).
    pub hidden_from_org: Option<Hidden>,
    /// Open sessions by id.
    pub sessions: BTreeMap<SessionId, Session>,
    /// With no session left: when the user goes offline.
    pub grace_until: Option<Millis>,
    /// Bumped by every event.
    pub version: u64,
    /// When the view last changed.
    pub updated_at: Millis,
    /// While present (online, away or in the grace): when this presence began, to the second
    /// (see [`crate::history`]).
    pub present_since: Option<Millis>,
    /// The location shared for `nearby`, while present.
    pub location: Option<Location>,
}

/// The part of a record the public view shows, minus `last_activity`: what decides whether a
/// change is an event.
#[derive(Debug, Clone, PartialEq)]
struct Visible {
    status: Status,
    away_reason: Option<AwayReason>,
    last_seen: Option<Millis>,
    zone_id: Option<ZoneId>,
    org_id: Option<OrgId>,
    devices: DeviceSet,
    metadata: Option<Metadata>,
    custom_status: Option<CustomStatus>,
    invisible: bool,
    presence_visibility: PresenceVisibility,
    /// Since when the user hides from onlookers outside the org, and from the org.
    hidden_since: Option<Millis>,
    hidden_from_org_since: Option<Millis>,
}

impl Visible {
    /// What an onlooker sees of it (see [`PresenceView::as_seen_by`]); `hiding` says since
    /// when the user hides from them.
    fn as_seen_with(&self, hiding: Option<Millis>) -> impl PartialEq + use<> {
        let (status, away_reason, last_seen, devices) = match hiding {
            None => (self.status, self.away_reason, self.last_seen, self.devices),
            Some(since) => (Status::Offline, None, Some(since), DeviceSet::EMPTY),
        };
        (
            (status, away_reason, last_seen, devices),
            (
                self.zone_id.clone(),
                self.org_id.clone(),
                self.metadata.clone(),
                self.custom_status.clone(),
            ),
        )
    }
}

impl UserRecord {
    /// Whether the user hides from onlookers outside the org, and from the org's members.
    fn hides(&self) -> (bool, bool) {
        let p = self.privacy.presence;
        (
            self.invisible || p != PresenceVisibility::Everyone,
            self.invisible || p == PresenceVisibility::Nobody,
        )
    }

    /// Starts or ends each kind of hiding as the settings now say. Hiding starts from now, or
    /// for a user who was offline before the change (`before`) from their last seen then:
    /// onlookers go on seeing what they saw, with the version and time they saw it (a user
    /// who comes back invisible, or turns privacy on while away, shows them nothing).
    fn settle_hidden(&mut self, before: &Visible, now: Millis) {
        let (others, org) = self.hides();
        let since = match (before.status, before.last_seen) {
            (Status::Offline, Some(seen)) => seen,
            _ => now,
        };
        let start = Hidden {
            since,
            version: self.version,
            updated_at: self.updated_at,
        };
        for (anchor, hides) in [(&mut self.hidden, others), (&mut self.hidden_from_org, org)] {
            match (hides, anchor.is_some()) {
                (true, false) => *anchor = Some(start),
                (false, true) => *anchor = None,
                _ => {}
            }
        }
    }
}

/// The record as it was before a transition; [`UserRecord::finish`] needs it.
#[derive(Debug, Clone)]
pub struct Before(Visible);

/// Where a non-offline user sits in the scope indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Sort key: last activity.
    pub activity: Millis,
    /// Zone set membership.
    pub zone_id: Option<ZoneId>,
    /// Org set membership.
    pub org_id: Option<OrgId>,
    /// Counted in the scopes' away counts.
    pub away: bool,
    /// Hiding from onlookers (invisible, privacy org or nobody): kept out of the scope indexes (lists and counts are what others see), and
    /// in an index of its own so that auto-away still finds the user.
    pub hidden: bool,
}

impl UserRecord {
    /// A user never seen before: offline, no sessions, version 0.
    pub fn new(user_id: UserId, now: Millis) -> Self {
        Self {
            user_id,
            status: Status::Offline,
            away_reason: None,
            manual_away: false,
            last_activity: now,
            last_seen: None,
            zone_id: None,
            org_id: None,
            devices: DeviceSet::EMPTY,
            metadata: None,
            custom_status: None,
            invisible: false,
            privacy: Privacy::default(),
            hidden: None,
            hidden_from_org: None,
            sessions: BTreeMap::new(),
            grace_until: None,
            version: 0,
            updated_at: now,
            present_since: None,
            location: None,
        }
    }

    /// The public view.
    pub fn view(&self) -> PresenceView {
        PresenceView {
            user_id: self.user_id.clone(),
            status: self.status,
            away_reason: self.away_reason,
            last_activity: Some(self.last_activity),
            last_seen: if self.status == Status::Offline {
                self.last_seen.map(LastSeen::At)
            } else {
                None
            },
            zone_id: self.zone_id.clone(),
            org_id: self.org_id.clone(),
            devices: self.devices,
            custom_status: self.custom_status.clone(),
            metadata: self.metadata.clone(),
            invisible: self.invisible,
            privacy: Some(self.privacy),
            version: self.version,
            updated_at: Some(self.updated_at),
            hidden: self.hidden,
            hidden_from_org: self.hidden_from_org,
        }
    }

    /// Where the user belongs in the scope indexes, or `None` while offline.
    pub fn index_entry(&self) -> Option<IndexEntry> {
        (self.status != Status::Offline).then(|| IndexEntry {
            activity: self.last_activity,
            zone_id: self.zone_id.clone(),
            org_id: self.org_id.clone(),
            away: self.status == Status::Away,
            hidden: self.hidden.is_some(),
        })
    }

    fn visible(&self) -> Visible {
        let v = self.view();
        Visible {
            status: v.status,
            away_reason: v.away_reason,
            last_seen: v.last_seen.and_then(LastSeen::at),
            zone_id: v.zone_id,
            org_id: v.org_id,
            devices: v.devices,
            metadata: v.metadata,
            custom_status: v.custom_status,
            invisible: self.invisible,
            presence_visibility: self.privacy.presence,
            hidden_since: self.hidden.map(|h| h.since),
            hidden_from_org_since: self.hidden_from_org.map(|h| h.since),
        }
    }

    /// Remembers the visible state before a transition.
    pub fn before(&self) -> Before {
        Before(self.visible())
    }

    /// Ends a transition: if the view changed (beyond `last_activity` and the `last_seen`
    /// privacy setting), bumps `version`, stamps `updated_at` and returns the event, with a
    /// zero feed id for the store to fill in. The event says how each kind of onlooker sees
    /// it; a user who hides from onlookers shows them this version and time only when they
    /// see a change.
    pub fn finish(&mut self, before: Before, now: Millis) -> Option<PresenceEvent> {
        self.settle_hidden(&before.0, now);
        let after = self.visible();
        if before.0 == after {
            return None;
        }
        let b = &before.0;
        // Stopping hiding from some onlookers, or an org change while hiding (who is a member
        // changes, so each kind of onlooker's count could go backwards or be compared): the
        // version jumps to the next multiple of VERSION_STRIDE, so that nobody can count the
        // changes made while hidden, and every onlooker starts again from it.
        let unhides = (b.hidden_since.is_some() && after.hidden_since.is_none())
            || (b.hidden_from_org_since.is_some() && after.hidden_from_org_since.is_none());
        let hiding = b.hidden_since.is_some() || after.hidden_since.is_some();
        let reclassed = hiding && b.org_id != after.org_id;
        self.version = if unhides || reclassed {
            (self.version / VERSION_STRIDE + 1) * VERSION_STRIDE
        } else {
            self.version + 1
        };
        self.updated_at = now;
        let onlookers = Onlookers {
            others_hidden_before: b.hidden_since.is_some(),
            others_unchanged: b.as_seen_with(b.hidden_since)
                == after.as_seen_with(after.hidden_since),
            org_hidden_before: b.hidden_from_org_since.is_some(),
            org_unchanged: b.as_seen_with(b.hidden_from_org_since)
                == after.as_seen_with(after.hidden_from_org_since),
        };
        // What onlookers who see the change are shown: while the user goes on hiding from
        // them, one more than they last saw (not the user's version, which counts changes
        // they never saw); when the hiding starts, this change's.
        let seen = [
            (!onlookers.others_unchanged, onlookers.others_hidden_before),
            (!onlookers.org_unchanged, onlookers.org_hidden_before),
        ];
        for (anchor, (seen, went_on)) in [&mut self.hidden, &mut self.hidden_from_org]
            .into_iter()
            .zip(seen)
        {
            if let Some(h) = anchor.as_mut().filter(|_| seen) {
                h.version = if went_on && !reclassed {
                    h.version + 1
                } else {
                    self.version
                };
                h.updated_at = now;
            }
        }
        Some(PresenceEvent {
            feed_id: Default::default(),
            user: self.view(),
            prev_status: before.0.status,
            prev_zone_id: before.0.zone_id,
            prev_org_id: before.0.org_id,
            ts: now,
            onlookers,
        })
    }

    fn recompute_devices(&mut self) {
        self.devices = self.sessions.values().map(|s| s.device).collect();
    }

    /// The status a connected (or graced) user has given manual away and activity.
    fn present_status(&mut self, auto_away: bool) {
        if self.manual_away {
            self.status = Status::Away;
            self.away_reason = Some(AwayReason::Manual);
        } else if auto_away {
            self.status = Status::Away;
            self.away_reason = Some(AwayReason::Auto);
        } else {
            self.status = Status::Online;
            self.away_reason = None;
        }
    }

    /// A session opens. Counts as activity; cancels a pending grace; zone and org, when given,
    /// replace the current ones.
    pub fn open(
        &mut self,
        id: SessionId,
        session: Session,
        zone: Option<ZoneId>,
        org: Option<OrgId>,
        now: Millis,
        sessions_per_user: usize,
    ) -> Result<(), TransitionError> {
        if self.sessions.contains_key(&id) {
            return Err(TransitionError::SessionExists(id));
        }
        if self.sessions.len() >= sessions_per_user {
            return Err(TransitionError::TooManySessions {
                limit: sessions_per_user,
            });
        }
        if self.status == Status::Offline {
            // A new presence starts visible; a reload within the grace keeps invisible.
            self.invisible = false;
            self.present_since = Some(Session::opened_at(now));
        }
        self.sessions.insert(id, session);
        self.grace_until = None;
        self.last_seen = None;
        self.last_activity = self.last_activity.max(now);
        self.present_status(false);
        if zone.is_some() {
            self.zone_id = zone;
        }
        if org.is_some() {
            self.org_id = org;
        }
        self.recompute_devices();
        Ok(())
    }

    /// A node re-asserts a session the store lost (a lapsed lease reaped it, or the store
    /// came back without it): an open, except that the presence goes on, so an invisible user
    /// stays invisible (a new presence would start visible).
    pub fn reopen(
        &mut self,
        id: SessionId,
        session: Session,
        zone: Option<ZoneId>,
        org: Option<OrgId>,
        now: Millis,
        sessions_per_user: usize,
    ) -> Result<(), TransitionError> {
        let invisible = self.invisible;
        self.open(id, session, zone, org, now, sessions_per_user)?;
        self.invisible = invisible;
        Ok(())
    }

    /// A session closes cleanly. The last one starts the grace (or goes offline at once when
    /// the grace is zero). Returns whether the session existed.
    pub fn close(&mut self, id: &SessionId, now: Millis, grace_ms: i64) -> bool {
        if self.sessions.remove(id).is_none() {
            return false;
        }
        if !self.sessions.is_empty() {
            self.recompute_devices();
        } else if grace_ms <= 0 {
            self.go_offline(now);
        } else {
            self.grace_until = Some(now + grace_ms);
            self.last_seen = Some(now);
        }
        true
    }

    /// Sessions end without grace (their REST lease or their node's lease ran out). A user
    /// left with none goes offline at once. Returns how many sessions ended.
    pub fn end_sessions(
        &mut self,
        ended: impl Fn(&SessionId, &Session) -> bool,
        now: Millis,
    ) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|id, s| !ended(id, s));
        let n = before - self.sessions.len();
        if n > 0 {
            if self.sessions.is_empty() {
                self.go_offline(now);
            } else {
                self.recompute_devices();
            }
        }
        n
    }

    fn go_offline(&mut self, last_seen: Millis) {
        self.status = Status::Offline;
        self.away_reason = None;
        self.devices = DeviceSet::EMPTY;
        self.grace_until = None;
        self.last_seen = Some(last_seen);
        self.present_since = None;
        self.location = None;
    }

    /// Activity at `at` (SPEC §3). Ignored while offline: a user without a session is not
    /// present, whatever a backend reports.
    pub fn activity(&mut self, at: Millis) {
        if self.status == Status::Offline {
            return;
        }
        self.last_activity = self.last_activity.max(at);
        if self.away_reason == Some(AwayReason::Auto) {
            self.present_status(false);
        }
    }

    /// A change the user asked for.
    pub fn change(&mut self, change: Change, now: Millis) {
        match change {
            Change::SetStatus { away, invisible } => {
                self.manual_away = away;
                let present = self.status != Status::Offline;
                if present {
                    if !away {
                        self.last_activity = self.last_activity.max(now);
                    }
                    self.present_status(false);
                }
                match invisible {
                    Some(true) if present => self.invisible = true,
                    Some(false) => self.invisible = false,
                    _ => {}
                }
            }
            Change::SetZone(z) => self.zone_id = z,
            Change::SetOrg(o) => self.org_id = o,
            Change::SetMetadata(m) => self.metadata = m,
            Change::SetCustomStatus(c) => self.custom_status = Some(c.normalised()),
            Change::ClearCustomStatus => self.custom_status = None,
            Change::SetPrivacy {
                presence,
                last_seen,
            } => {
                self.privacy.presence = presence.unwrap_or(self.privacy.presence);
                self.privacy.last_seen = last_seen.unwrap_or(self.privacy.last_seen);
            }
            Change::SetLocation(l) => {
                if self.status != Status::Offline {
                    self.location = l;
                }
            }
        }
    }

    /// Where the user belongs in the nearby indexes: present, seen by everyone as they are
    /// (lists and counts show the same users), and sharing a location.
    pub fn geo_entry(&self) -> Option<(Location, Option<OrgId>)> {
        let listed = self.index_entry().is_some_and(|e| !e.hidden);
        self.location
            .filter(|_| listed)
            .map(|l| (l, self.org_id.clone()))
    }

    /// When the custom status expires, if it has one with an expiry: the key of the stores'
    /// expiry index.
    pub fn custom_expiry(&self) -> Option<Millis> {
        self.custom_status.as_ref().and_then(|c| c.expires_at)
    }

    /// Clears the custom status if its expiry is due. Returns whether it did. A status
    /// replaced or cleared since an index entry was written is judged by what the record
    /// holds now, so a stale entry never clears it.
    pub fn expire_custom_status(&mut self, now: Millis) -> bool {
        if self.custom_expiry().is_some_and(|t| t <= now) {
            self.custom_status = None;
            true
        } else {
            false
        }
    }

    /// Auto-away: an `online` user inactive since `cutoff` or earlier turns `away (auto)`.
    /// Returns whether it applied.
    pub fn auto_away(&mut self, cutoff: Millis) -> bool {
        if self.status == Status::Online && self.last_activity <= cutoff {
            self.present_status(true);
            true
        } else {
            false
        }
    }

    /// Ends the grace if it is due. Returns whether the user went offline.
    pub fn expire_grace(&mut self, now: Millis) -> bool {
        match self.grace_until {
            Some(t) if t <= now && self.sessions.is_empty() => {
                let seen = self.last_seen.unwrap_or(now);
                self.go_offline(seen);
                true
            }
            _ => false,
        }
    }

    /// Whether an offline record is past retention and should be deleted.
    pub fn retention_expired(&self, cutoff: Millis) -> bool {
        self.status == Status::Offline && self.last_seen.is_some_and(|t| t <= cutoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::Onlooker;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }
    fn sid(s: &str) -> SessionId {
        SessionId::new(s).unwrap()
    }
    /// User 1 with one web session "a" opened at 0 (version 0: no `finish` yet).
    fn connected() -> UserRecord {
        let mut r = UserRecord::new(uid("1"), 0);
        r.open(sid("a"), ws(DeviceKind::Web), None, None, 0, 10)
            .unwrap();
        r
    }

    fn ws(device: DeviceKind) -> Session {
        Session {
            node: Some(NodeId::new("n1").unwrap()),
            device,
            lease_until: None,
            opened: Some(0),
        }
    }

    #[test]
    fn first_open_is_one_online_event_and_a_reload_in_grace_is_none() {
        let mut r = UserRecord::new(uid("1"), 0);
        let b = r.before();
        r.open(sid("a"), ws(DeviceKind::Web), None, None, 10, 10)
            .unwrap();
        let e = r.finish(b, 10).expect("online event");
        assert_eq!(
            (e.prev_status, e.user.status, e.user.version),
            (Status::Offline, Status::Online, 1)
        );

        let b = r.before();
        assert!(r.close(&sid("a"), 20, 5000));
        assert!(
            r.finish(b, 20).is_none(),
            "closing into grace shows nothing"
        );
        let b = r.before();
        r.open(sid("b"), ws(DeviceKind::Web), None, None, 30, 10)
            .unwrap();
        assert!(
            r.finish(b, 30).is_none(),
            "reload within grace shows nothing"
        );
        assert_eq!(r.version, 1);
    }

    #[test]
    fn manual_away_survives_activity_and_reconnects() {
        let mut r = connected();
        r.change(Change::away(), 1);
        r.activity(2);
        assert_eq!(
            (r.status, r.away_reason),
            (Status::Away, Some(AwayReason::Manual))
        );
        assert_eq!(r.last_activity, 2);
        r.close(&sid("a"), 3, 0);
        assert_eq!(r.status, Status::Offline);
        r.open(sid("b"), ws(DeviceKind::Web), None, None, 4, 10)
            .unwrap();
        assert_eq!(
            (r.status, r.away_reason),
            (Status::Away, Some(AwayReason::Manual))
        );
        r.change(Change::online(), 5);
        assert_eq!((r.status, r.away_reason), (Status::Online, None));
    }

    #[test]
    fn auto_away_reverts_on_activity() {
        let mut r = connected();
        assert!(!r.auto_away(-1));
        assert!(r.auto_away(0));
        assert_eq!(r.away_reason, Some(AwayReason::Auto));
        r.activity(7);
        assert_eq!(r.status, Status::Online);
    }

    fn meeting(expires_at: Option<Millis>) -> CustomStatus {
        CustomStatus {
            kind: crate::view::CustomStatusKind::InMeeting,
            text: Some("Standup".into()),
            emoji: None,
            expires_at,
        }
    }

    #[test]
    fn custom_status_is_one_event_leaves_status_alone_and_expires_on_time() {
        let mut r = connected();
        let b = r.before();
        r.change(Change::SetCustomStatus(meeting(Some(100))), 1);
        let e = r.finish(b, 1).expect("one event");
        assert_eq!(e.user.custom_status, Some(meeting(Some(100))));
        assert_eq!(
            (e.prev_status, e.user.status),
            (Status::Online, Status::Online)
        );
        let b = r.before();
        r.change(Change::SetCustomStatus(meeting(Some(100))), 2);
        assert!(r.finish(b, 2).is_none(), "the same value again is no event");
        assert_eq!(r.custom_expiry(), Some(100));
        assert!(!r.expire_custom_status(99), "not before its time");
        let b = r.before();
        assert!(r.expire_custom_status(100));
        assert_eq!(r.finish(b, 100).unwrap().user.custom_status, None);
        assert!(!r.expire_custom_status(200));
        r.change(Change::SetCustomStatus(meeting(None)), 201);
        assert_eq!(r.custom_expiry(), None);
        let b = r.before();
        r.change(Change::ClearCustomStatus, 202);
        assert!(r.finish(b, 202).is_some());
    }

    fn invisible(on: bool) -> Change {
        Change::SetStatus {
            away: false,
            invisible: Some(on),
        }
    }

    #[test]
    fn going_invisible_looks_like_going_offline_to_others_and_hides_what_follows() {
        let mut r = connected();

        let b = r.before();
        r.change(invisible(true), 10);
        let e = r.finish(b, 10).expect("one event");
        assert!(e.user.invisible, "the truth says invisible");
        assert_eq!(e.user.status, Status::Online);
        let seen = e.as_seen_by(Onlooker::Other, 0).expect("others see it");
        assert_eq!(
            (seen.prev_status, seen.user.status, seen.user.last_seen),
            (Status::Online, Status::Offline, Some(LastSeen::At(10)))
        );
        assert!(!seen.user.invisible && seen.user.devices.is_empty());
        assert_eq!(seen.user.version, e.user.version);
        assert!(r.index_entry().unwrap().hidden);

        // Auto-away and a second device: the user's own view changes, others see nothing.
        let b = r.before();
        assert!(r.auto_away(20));
        let e = r.finish(b, 20).expect("an event for the user");
        assert!(e.onlookers.others_unchanged && e.as_seen_by(Onlooker::Other, 0).is_none());
        let b = r.before();
        r.open(sid("b"), ws(DeviceKind::Mobile), None, None, 21, 10)
            .unwrap();
        assert!(
            r.finish(b, 21)
                .unwrap()
                .as_seen_by(Onlooker::Other, 0)
                .is_none()
        );
        let others = r.view().as_seen_by(Onlooker::Other, 0);
        assert_eq!(
            (others.version, others.updated_at, others.last_activity),
            (1, Some(10), Some(10)),
            "what others read has not moved since the user went invisible"
        );

        // A move is what an offline user shows too: others see it, as offline.
        let b = r.before();
        r.change(Change::SetZone(Some(ZoneId::new("7").unwrap())), 30);
        let seen = r
            .finish(b, 30)
            .unwrap()
            .as_seen_by(Onlooker::Other, 0)
            .unwrap();
        assert_eq!(
            (seen.prev_status, seen.user.status),
            (Status::Offline, Status::Offline)
        );
        assert_eq!(
            (
                seen.user.version,
                r.view().as_seen_by(Onlooker::Other, 0).version
            ),
            (2, 2),
            "one more than others saw, not the user's version ({})",
            r.version
        );
        assert_eq!(r.version, 4);

        // Coming back looks like coming online.
        let b = r.before();
        r.change(invisible(false), 40);
        let seen = r
            .finish(b, 40)
            .unwrap()
            .as_seen_by(Onlooker::Other, 0)
            .unwrap();
        assert_eq!(
            (seen.prev_status, seen.user.status),
            (Status::Offline, Status::Online)
        );
        assert_eq!(
            seen.user.version, VERSION_STRIDE,
            "a jump that does not count the hidden changes"
        );
        assert!(!r.index_entry().unwrap().hidden);
    }

    #[test]
    fn invisible_survives_a_reload_and_going_offline_but_not_a_new_presence() {
        let mut r = connected();
        r.change(invisible(true), 5);
        r.finish(r.before(), 5);
        r.close(&sid("a"), 10, 1000);
        r.open(sid("b"), ws(DeviceKind::Web), None, None, 20, 10)
            .unwrap();
        assert!(r.hidden.is_some(), "a reload within the grace keeps it");

        let b = r.before();
        r.close(&sid("b"), 30, 0);
        let e = r.finish(b, 30).expect("offline, for the user");
        assert!(
            e.as_seen_by(Onlooker::Other, 0).is_none(),
            "others saw offline already"
        );
        assert_eq!(
            r.view().as_seen_by(Onlooker::Other, 0).last_seen,
            Some(LastSeen::At(5))
        );

        let b = r.before();
        r.open(sid("c"), ws(DeviceKind::Web), None, None, 40, 10)
            .unwrap();
        let seen = r
            .finish(b, 40)
            .unwrap()
            .as_seen_by(Onlooker::Other, 0)
            .unwrap();
        assert!(r.hidden.is_none(), "a new presence starts visible");
        assert_eq!(
            (seen.prev_status, seen.user.status),
            (Status::Offline, Status::Online)
        );

        // Invisible needs a present user.
        r.close(&sid("c"), 50, 0);
        r.change(invisible(true), 60);
        assert!(r.hidden.is_none());
    }

    #[test]
    fn hiding_while_offline_shows_onlookers_nothing_new() {
        let mut r = connected();
        let b = r.before();
        r.close(&sid("a"), 2000, 0);
        r.finish(b, 2000);
        let seen_before = r.view().as_seen_by(Onlooker::Other, 500_000);
        let b = r.before();
        r.change(
            Change::SetPrivacy {
                presence: Some(PresenceVisibility::Nobody),
                last_seen: None,
            },
            500_000,
        );
        let e = r.finish(b, 500_000).expect("the user's own view changed");
        assert!(e.as_seen_by(Onlooker::Other, 500_000).is_none());
        assert!(e.as_seen_by(Onlooker::Member, 500_000).is_none());
        let seen = r.view().as_seen_by(Onlooker::Other, 500_000);
        assert_eq!(
            (seen.status, seen.last_seen, seen.version, seen.updated_at),
            (
                seen_before.status,
                seen_before.last_seen,
                seen_before.version,
                seen_before.updated_at
            ),
            "no activity, no new last seen"
        );
        assert_eq!(
            seen.last_activity,
            Some(2000),
            "a hiding user's last activity is shown as their last seen"
        );
    }

    #[test]
    fn a_move_while_hiding_never_takes_any_onlookers_version_back() {
        let mut r = UserRecord::new(uid("1"), 0);
        r.open(
            sid("a"),
            ws(DeviceKind::Web),
            None,
            Some(OrgId::new("A").unwrap()),
            0,
            10,
        )
        .unwrap();
        let b = r.before();
        r.change(
            Change::SetPrivacy {
                presence: Some(PresenceVisibility::Org),
                last_seen: None,
            },
            1,
        );
        r.finish(b, 1);
        // Eight changes only the org sees.
        for i in 0..8 {
            let b = r.before();
            r.change(
                if i % 2 == 0 {
                    Change::away()
                } else {
                    Change::online()
                },
                2 + i,
            );
            r.finish(b, 2 + i);
        }
        let held_by_org_a = r.view().as_seen_by(Onlooker::Member, 20).version;
        let held_by_others = r.view().as_seen_by(Onlooker::Other, 20).version;
        let b = r.before();
        r.change(Change::SetOrg(Some(OrgId::new("B").unwrap())), 30);
        let e = r.finish(b, 30).unwrap();
        // Org A's members are others now, org B's members are members now.
        let was_a = e.as_seen_by(Onlooker::Other, 30).unwrap().user.version;
        let now_b = e.as_seen_by(Onlooker::Member, 30).unwrap().user.version;
        assert!(was_a > held_by_org_a, "{was_a} after {held_by_org_a}");
        assert!(was_a > held_by_others);
        assert_eq!(
            (was_a, now_b),
            (VERSION_STRIDE, VERSION_STRIDE),
            "everyone starts again from the stride"
        );
    }

    #[test]
    fn opening_invisible_after_offline_shows_onlookers_nothing() {
        let mut r = connected();
        let b = r.before();
        r.close(&sid("a"), 100, 0);
        r.finish(b, 100);
        let seen_before = r.view().as_seen_by(Onlooker::Other, 200);
        let b = r.before();
        r.open(sid("b"), ws(DeviceKind::Web), None, None, 200, 10)
            .unwrap();
        r.invisible = true; // as a store does for OpenSession::invisible
        let e = r.finish(b, 200).expect("the user's own view changed");
        assert!(e.as_seen_by(Onlooker::Other, 200).is_none(), "no event");
        let seen = r.view().as_seen_by(Onlooker::Other, 200);
        assert_eq!(
            (seen.status, seen.last_seen, seen.version),
            (Status::Offline, seen_before.last_seen, seen_before.version),
            "still offline since 100, not since the connect"
        );
    }

    #[test]
    fn session_limit_and_duplicate_ids_are_refused() {
        let mut r = UserRecord::new(uid("1"), 0);
        r.open(sid("a"), ws(DeviceKind::Web), None, None, 0, 1)
            .unwrap();
        assert_eq!(
            r.open(sid("a"), ws(DeviceKind::Web), None, None, 0, 5),
            Err(TransitionError::SessionExists(sid("a")))
        );
        assert_eq!(
            r.open(sid("b"), ws(DeviceKind::Web), None, None, 0, 1),
            Err(TransitionError::TooManySessions { limit: 1 })
        );
    }
}
