//! Who may see or do what (SPEC §6, §7 and the tenancy rules of §10). Every surface asks
//! here — REST routes, the WebSocket gateway, SSE, snapshots and the hub — so a rule such as
//! tenant isolation is one change in this file, not one per surface.
//!
//! An [`Access`] is one caller's rights: built once per request or connection from the
//! verified token and the node's settings.
//!
//! What a user hides (invisible, privacy) is decided here too: the user and privileged
//! tokens see the truth; everyone else is an onlooker ([`Onlooker`]) — a member of the user's
//! org, or anyone else — and sees what the user shows them.

use presence_core::{
    LastSeen, Onlooker, OrgId, PresenceEvent, PresenceView, Scope, SharedClock, UserId,
};

use crate::auth::Principal;
use crate::error::ApiError;

/// One caller's rights.
#[derive(Debug, Clone)]
pub struct Access {
    who: Principal,
    /// Tenant isolation: the only org this caller may see or join.
    confined_to: Option<OrgId>,
    /// Now, for what depends on it (an approximate last seen).
    clock: SharedClock,
    /// A backend onlooker that is nobody's self (webhook endpoints): see [`Access::outsider`].
    outsider: bool,
}

impl Access {
    /// The rights of `who` on a node with `tenant_isolation` on or off. With isolation on, a
    /// user token carrying `org_id` is confined to that org; service and admin tokens never
    /// are.
    pub fn new(who: Principal, tenant_isolation: bool, clock: SharedClock) -> Self {
        let confined_to = (tenant_isolation && !who.role.is_privileged())
            .then(|| who.org.clone())
            .flatten();
        Self {
            who,
            confined_to,
            clock,
            outsider: false,
        }
    }

    /// The rights of a backend that sees what anyone outside every org sees (a webhook
    /// endpoint): never privileged, never a user's self, never a member of a user's org, never
    /// confined. Invisible users and privacy `org` and `nobody` look offline to it, and
    /// changes they hide reach it not at all — the same [`Onlooker::Other`] view any
    /// stranger's token gets.
    pub fn outsider(clock: SharedClock) -> Self {
        let who = Principal {
            // Never compared: an outsider is nobody's self (see `onlooker`).
            user: UserId::new("webhook").expect("a valid id"),
            org: None,
            role: crate::auth::Role::User,
            expires_at: u64::MAX,
        };
        Self {
            who,
            confined_to: None,
            clock,
            outsider: true,
        }
    }

    /// The verified token behind these rights.
    pub fn principal(&self) -> &Principal {
        &self.who
    }

    /// Whether the caller acts for any user (service and admin tokens).
    pub fn is_privileged(&self) -> bool {
        self.who.role.is_privileged()
    }

    /// The org a confined caller is kept to, if any.
    pub fn confined_to(&self) -> Option<&OrgId> {
        self.confined_to.as_ref()
    }

    /// Whether the caller may use the admin routes (role `admin`).
    pub fn administer(&self) -> Result<(), ApiError> {
        if self.who.role == crate::auth::Role::Admin {
            Ok(())
        } else {
            Err(ApiError::permission_denied(
                "admin routes need a token with role admin",
            ))
        }
    }

    /// The user a request acts on: the token's own, or for a service token the user it
    /// names. A user token naming someone else is refused.
    pub fn act_as(&self, named: Option<UserId>) -> Result<UserId, ApiError> {
        match named {
            None => Ok(self.who.user.clone()),
            Some(u) if u == self.who.user || self.is_privileged() => Ok(u),
            Some(_) => Err(ApiError::permission_denied(
                "a user token acts only on its own presence",
            )),
        }
    }

    /// Whether the caller may list `user`'s sessions (`GET /sessions/{user}`): its own, and
    /// anyone's for a service or admin token. Another user's token is refused whether or not
    /// that user exists. Tenant isolation needs nothing more here: a user token only ever sees
    /// its own user's sessions, and service and admin tokens are never confined.
    pub fn may_see_sessions(&self, user: &UserId) -> Result<(), ApiError> {
        self.own_or_privileged(user, "a user token sees only its own sessions")
    }

    /// Whether the caller may read `user`'s online history (`GET /history/{user}`): the same
    /// rule as sessions. History is the truth (invisible time counts: the user was there), so
    /// no onlooker reads it.
    pub fn may_see_history(&self, user: &UserId) -> Result<(), ApiError> {
        self.own_or_privileged(user, "a user token reads only its own history")
    }

    fn own_or_privileged(&self, user: &UserId, refusal: &'static str) -> Result<(), ApiError> {
        if self.is_privileged() || *user == self.who.user {
            Ok(())
        } else {
            Err(ApiError::permission_denied(refusal))
        }
    }

    /// Whether the caller may read reports across users (`GET /inactive`): service and admin
    /// tokens. The report lists exact last-seen times, which a user may hide from onlookers
    /// (privacy `last_seen`), so it is for the backend, not for user tokens.
    pub fn may_read_reports(&self) -> Result<(), ApiError> {
        if self.is_privileged() {
            Ok(())
        } else {
            Err(ApiError::permission_denied(
                "only service and admin tokens read the inactive report",
            ))
        }
    }

    /// The org `nearby` searches in for this caller: a confined caller's own org (tenant
    /// isolation), else `None`, everyone. Only users whom everyone sees as they are (the
    /// users of the lists) are ever found, so the rest of the rule is [`Access::view`] on each.
    pub fn nearby_org(&self) -> Option<OrgId> {
        self.confined_to.clone()
    }

    /// Whether the caller may end a user's session (`DELETE /sessions/{user}/{session}`):
    /// service and admin tokens only (SPEC §6); a user token may not, not even its own.
    pub fn may_end_sessions(&self) -> Result<(), ApiError> {
        if self.is_privileged() {
            Ok(())
        } else {
            Err(ApiError::permission_denied(
                "only service and admin tokens end sessions",
            ))
        }
    }

    /// Whether the caller may report activity for all of `users`.
    pub fn act_for_all(&self, users: &[UserId]) -> Result<(), ApiError> {
        if self.is_privileged() || users.iter().all(|u| *u == self.who.user) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(
                "a user token reports only its own activity",
            ))
        }
    }

    /// Whether the caller may place a user in `org` (a connect, a heartbeat, a move). A
    /// confined caller may join only its own org (or leave orgs).
    pub fn place_in_org(&self, org: Option<&OrgId>) -> Result<(), ApiError> {
        match (&self.confined_to, org) {
            (Some(own), Some(org)) if own != org => Err(ApiError::permission_denied(format!(
                "this token may place its user only in org {own}"
            ))),
            _ => Ok(()),
        }
    }

    /// How this caller looks at `user`, who is in `org`: `None` when it sees the truth (the
    /// user themselves, service and admin tokens), else as a member of the user's org (a
    /// token carrying that org) or as anyone else. Invisible and privacy `nobody` hide from
    /// both; privacy `org` from anyone else only (SPEC §3).
    pub fn onlooker(&self, user: &UserId, org: Option<&OrgId>) -> Option<Onlooker> {
        if !self.outsider && (self.is_privileged() || *user == self.who.user) {
            return None;
        }
        match (org, &self.who.org) {
            (Some(theirs), Some(mine)) if theirs == mine => Some(Onlooker::Member),
            _ => Some(Onlooker::Other),
        }
    }

    /// Whether the caller sees the truth of `user`'s presence and settings.
    pub fn sees_truth_of(&self, user: &UserId) -> bool {
        self.onlooker(user, None).is_none()
    }

    /// A view as this caller may see it: `None` when the user is hidden from it (another
    /// tenant's user answers as if it did not exist); otherwise as the user shows it to this
    /// caller ([`PresenceView::as_seen_by`]) unless the caller sees the truth.
    pub fn view(&self, view: PresenceView) -> Option<PresenceView> {
        if let Some(own) = &self.confined_to
            && view.org_id.as_ref() != Some(own)
        {
            return None;
        }
        Some(match self.onlooker(&view.user_id, view.org_id.as_ref()) {
            None => view,
            Some(o) => view.as_seen_by(o, self.clock.now_ms()),
        })
    }

    /// How much of an event this caller may see: a confined caller sees its org's users,
    /// and a user leaving its org only as a departure (nothing of where they went); an
    /// onlooker sees the change as the user shows it to them, or nothing when they see no
    /// change (the user hid from them before and after, and only what they hide moved).
    pub fn event(&self, e: &PresenceEvent) -> Sight {
        let sight = match &self.confined_to {
            None => Sight::Whole,
            Some(own) if e.user.org_id.as_ref() == Some(own) => Sight::Whole,
            Some(own) if e.prev_org_id.as_ref() == Some(own) => Sight::Departure,
            Some(_) => Sight::Nothing,
        };
        match sight {
            Sight::Whole => match self.onlooker(&e.user.user_id, e.user.org_id.as_ref()) {
                None => Sight::Whole,
                Some(o) if e.onlookers.unchanged_for(o) => Sight::Nothing,
                Some(o) => Sight::As(o),
            },
            sight => sight,
        }
    }

    /// The event as this caller may see it, if at all.
    pub fn event_as_seen(&self, e: PresenceEvent) -> Option<PresenceEvent> {
        let sight = self.event(&e);
        self.show(e, sight)
    }

    /// `e` as `sight` shows it.
    pub fn show(&self, e: PresenceEvent, sight: Sight) -> Option<PresenceEvent> {
        let now = self.clock.now_ms();
        match sight {
            Sight::Whole => Some(e),
            Sight::As(o) => e.as_seen_by(o, now),
            Sight::Departure => {
                // As the org's members saw the user, who may have hidden from them.
                let setting = e.user.privacy.map(|p| p.last_seen).unwrap_or_default();
                e.as_seen_by(Onlooker::Member, now)
                    .map(|seen| departure(seen, setting, now))
            }
            Sight::Nothing => None,
        }
    }

    /// The scope a query or subscription for `asked` reads. A confined caller's `global` is
    /// its own org; another org answers not found; a zone is refused, because a zone's count
    /// and pages span every org and the store keeps no per-org zone index (SPEC §10 allows
    /// either counting within the org or refusing).
    pub fn scope(&self, asked: &Scope) -> Result<Scope, ApiError> {
        match (&self.confined_to, asked) {
            (None, s) => Ok(s.clone()),
            (Some(own), Scope::Global) => Ok(Scope::Org(own.clone())),
            (Some(own), Scope::Org(o)) if o == own => Ok(asked.clone()),
            (Some(_), Scope::Org(_)) => Err(ApiError::not_found("no such org")),
            (Some(_), Scope::Zone(_)) => Err(ApiError::permission_denied(
                "with tenant isolation, an org-confined token queries its org, not zones",
            )),
        }
    }

    /// Whether this caller is shown that a user of `typer_org` is typing: the one decision
    /// behind `typing` frames (which subscribers of a conversation get each one) and
    /// `GET /messenger/presence/typing/{conversation_id}` (which typers it lists).
    ///
    /// - presenced keeps no conversations and knows no members, so any token may follow any
    ///   conversation id and list its typers; the product decides who learns a conversation's
    ///   id (or proxies the subscription). A user token may only type as itself (frames act
    ///   for the connection's own user).
    /// - With tenant isolation a confined token is shown typers of its own org only (the org
    ///   their record had when the entry was written), as it sees only its org's presence.
    /// - A user whose presence is hidden from the caller (invisible, privacy `org` or
    ///   `nobody`) still types visibly, on purpose: the members of a conversation see that
    ///   user's messages anyway, and an indicator says no more than the message that
    ///   follows. (It does say the user is there right now; a user who wants to be unseen
    ///   does not type.)
    pub fn sees_typing(&self, typer_org: Option<&OrgId>) -> bool {
        match &self.confined_to {
            None => true,
            Some(own) => typer_org == Some(own),
        }
    }
}

/// How much of an event a caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// All of it: the truth.
    Whole,
    /// As the user shows it to this kind of onlooker ([`PresenceEvent::as_seen_by`]).
    As(Onlooker),
    /// That the user left the caller's org, and nothing of where they went.
    Departure,
    /// None of it.
    Nothing,
}

/// A user who left the viewer's org, from the change as the org's members see it (`e`, see
/// [`PresenceEvent::as_seen_by`]): gone (offline; last seen then if they saw the user
/// present, shown as precisely as the user's `last_seen` setting allows at `now`), with
/// nothing of their new org, zone, devices, custom status or metadata.
pub fn departure(
    mut e: PresenceEvent,
    last_seen: presence_core::LastSeenVisibility,
    now: presence_core::Millis,
) -> PresenceEvent {
    let v = &mut e.user;
    // Seen present, the user is last seen now; seen offline, last seen stays as it was shown
    // (already as precisely as the user allows).
    let was_present = v.status != presence_core::Status::Offline;
    if was_present {
        v.last_activity = Some(e.ts);
        v.last_seen = Some(LastSeen::At(e.ts));
    }
    v.status = presence_core::Status::Offline;
    v.away_reason = None;
    v.zone_id = None;
    v.org_id = None;
    v.devices = presence_core::DeviceSet::EMPTY;
    v.custom_status = None;
    v.metadata = None;
    if was_present {
        v.show_last_seen(last_seen, now);
    }
    e.prev_zone_id = None;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn access(user: &str, org: Option<&str>, role: Role, isolation: bool) -> Access {
        Access::new(
            Principal {
                user: UserId::new(user).unwrap(),
                org: org.map(|o| OrgId::new(o).unwrap()),
                role,
                expires_at: u64::MAX,
            },
            isolation,
            std::sync::Arc::new(presence_core::ManualClock::new(0)),
        )
    }

    fn org(o: &str) -> OrgId {
        OrgId::new(o).unwrap()
    }

    #[test]
    fn a_user_token_acts_only_for_itself_and_a_service_token_for_anyone() {
        let user = access("1", None, Role::User, false);
        let service = access("svc", None, Role::Service, false);
        let two = UserId::new("2").unwrap();
        assert_eq!(user.act_as(None).unwrap().as_str(), "1");
        assert_eq!(
            user.act_as(Some(two.clone())).unwrap_err().code,
            "permission_denied"
        );
        assert_eq!(service.act_as(Some(two.clone())).unwrap(), two);
        assert!(user.act_for_all(std::slice::from_ref(&two)).is_err());
        assert!(service.act_for_all(&[two]).is_ok());
    }

    #[test]
    fn sessions_are_seen_by_their_user_and_services_and_ended_by_services_only() {
        let two = UserId::new("2").unwrap();
        let own = access("2", Some("100"), Role::User, true);
        assert!(
            own.may_see_sessions(&two).is_ok(),
            "confined or not, its own"
        );
        let other = access("1", None, Role::User, false);
        assert_eq!(
            other.may_see_sessions(&two).unwrap_err().code,
            "permission_denied"
        );
        for role in [Role::Service, Role::Admin] {
            let backend = access("svc", Some("100"), role, true);
            assert!(backend.may_see_sessions(&two).is_ok());
            assert!(backend.may_end_sessions().is_ok());
        }
        assert_eq!(
            own.may_end_sessions().unwrap_err().code,
            "permission_denied"
        );
    }

    #[test]
    fn history_is_its_users_and_the_backends_and_reports_the_backends_only() {
        let two = UserId::new("2").unwrap();
        let own = access("2", Some("100"), Role::User, true);
        assert!(own.may_see_history(&two).is_ok());
        assert_eq!(
            own.may_read_reports().unwrap_err().code,
            "permission_denied"
        );
        let other = access("1", Some("100"), Role::User, false);
        assert_eq!(
            other.may_see_history(&two).unwrap_err().code,
            "permission_denied",
            "even in the same org"
        );
        for role in [Role::Service, Role::Admin] {
            let backend = access("svc", Some("100"), role, true);
            assert!(backend.may_see_history(&two).is_ok());
            assert!(backend.may_read_reports().is_ok());
            assert_eq!(backend.nearby_org(), None, "never confined");
        }
    }

    #[test]
    fn nearby_searches_a_confined_callers_org_only() {
        let confined = access("1", Some("100"), Role::User, true);
        assert_eq!(confined.nearby_org(), Some(org("100")));
        let free = access("1", Some("100"), Role::User, false);
        assert_eq!(free.nearby_org(), None);
    }

    #[test]
    fn tenant_isolation_confines_user_tokens_with_an_org_only() {
        let confined = access("1", Some("100"), Role::User, true);
        assert_eq!(confined.confined_to(), Some(&org("100")));
        for free in [
            access("1", Some("100"), Role::User, false),
            access("1", None, Role::User, true),
            access("1", Some("100"), Role::Service, true),
            access("1", Some("100"), Role::Admin, true),
        ] {
            assert_eq!(free.confined_to(), None, "{free:?}");
            assert!(free.place_in_org(Some(&org("200"))).is_ok());
            assert_eq!(free.scope(&Scope::Global).unwrap(), Scope::Global);
        }
        assert!(confined.place_in_org(Some(&org("100"))).is_ok());
        assert!(
            confined.place_in_org(None).is_ok(),
            "leaving orgs is allowed"
        );
        assert_eq!(
            confined.place_in_org(Some(&org("200"))).unwrap_err().code,
            "permission_denied"
        );
        assert_eq!(
            confined.scope(&Scope::Global).unwrap(),
            Scope::Org(org("100"))
        );
        assert_eq!(
            confined.scope(&Scope::Org(org("200"))).unwrap_err().code,
            "not_found"
        );
        assert_eq!(
            confined
                .scope(&"zone:10".parse().unwrap())
                .unwrap_err()
                .code,
            "permission_denied"
        );
    }

    #[test]
    fn a_hidden_user_leaving_the_org_departs_as_the_org_saw_them() {
        use presence_core::record::VERSION_STRIDE;
        use presence_core::{Change, DeviceKind, NodeId, Session, SessionId, Status, UserRecord};
        let mut r = UserRecord::new(UserId::new("1").unwrap(), 0);
        let session = Session {
            node: Some(NodeId::new("n1").unwrap()),
            device: DeviceKind::Web,
            lease_until: None,
            opened: None,
        };
        let sid = SessionId::new("s1").unwrap();
        r.open(sid, session, None, Some(org("100")), 0, 10).unwrap();
        let b = r.before();
        r.change(
            Change::SetStatus {
                away: false,
                invisible: Some(true),
            },
            10,
        );
        r.finish(b, 10);
        let b = r.before();
        assert!(r.auto_away(15), "a change the org does not see");
        r.finish(b, 15);
        let b = r.before();
        r.change(Change::SetOrg(Some(org("200"))), 20);
        let moved = r.finish(b, 20).unwrap();
        let viewer = access("v", Some("100"), Role::User, true);
        assert_eq!(viewer.event(&moved), Sight::Departure);
        let seen = viewer.event_as_seen(moved.clone()).unwrap();
        assert_eq!(
            (seen.prev_status, seen.user.status, seen.user.invisible),
            (Status::Offline, Status::Offline, false),
            "the org saw an invisible user offline: {seen:?}"
        );
        assert_eq!(
            seen.user.last_seen,
            Some(LastSeen::At(10)),
            "since they went invisible, not when they moved"
        );
        assert_eq!(
            (seen.user.version, moved.user.version),
            (VERSION_STRIDE, VERSION_STRIDE),
            "a move while hiding starts every onlooker again from the next stride, which \
             does not count the hidden changes"
        );
    }

    #[test]
    fn a_user_leaving_a_confined_viewers_org_is_seen_only_as_gone() {
        let viewer = access("v", Some("100"), Role::User, true);
        let view = PresenceView {
            user_id: UserId::new("1").unwrap(),
            status: presence_core::Status::Online,
            away_reason: None,
            last_activity: Some(5),
            last_seen: None,
            zone_id: Some(presence_core::ZoneId::new("7").unwrap()),
            org_id: Some(org("200")),
            devices: presence_core::DeviceSet::EMPTY,
            custom_status: None,
            metadata: Some(serde_json::Map::from_iter([(
                "secret".to_string(),
                "x".into(),
            )])),
            invisible: false,
            privacy: None,
            version: 3,
            updated_at: Some(9),
            hidden: None,
            hidden_from_org: None,
        };
        let moved = PresenceEvent {
            feed_id: presence_core::FeedId { ms: 9, seq: 0 },
            user: view.clone(),
            prev_status: presence_core::Status::Online,
            prev_zone_id: Some(presence_core::ZoneId::new("6").unwrap()),
            prev_org_id: Some(org("100")),
            ts: 9,
            onlookers: Default::default(),
        };
        assert_eq!(viewer.event(&moved), Sight::Departure);
        let seen = viewer.event_as_seen(moved.clone()).unwrap();
        assert_eq!(seen.user.status, presence_core::Status::Offline);
        assert_eq!(
            (seen.user.org_id, seen.user.zone_id, seen.prev_zone_id),
            (None, None, None)
        );
        assert_eq!(seen.user.metadata, None, "nothing of where they went");
        assert_eq!((seen.user.version, seen.prev_org_id), (3, Some(org("100"))));
        let elsewhere = PresenceEvent {
            prev_org_id: Some(org("300")),
            ..moved.clone()
        };
        assert_eq!(viewer.event(&elsewhere), Sight::Nothing);
        assert_eq!(
            access("v", None, Role::Service, true).event(&moved),
            Sight::Whole
        );
    }

    #[test]
    fn a_confined_token_sees_typers_of_its_own_org_only() {
        let (own, other) = (OrgId::new("100").unwrap(), OrgId::new("200").unwrap());
        let confined = access("v", Some("100"), Role::User, true);
        assert!(confined.sees_typing(Some(&own)));
        assert!(!confined.sees_typing(Some(&other)));
        assert!(
            !confined.sees_typing(None),
            "a typer in no org is not of its org"
        );
        for free in [
            access("v", Some("100"), Role::User, false),
            access("v", None, Role::User, true),
            access("v", Some("100"), Role::Service, true),
        ] {
            assert!(
                free.sees_typing(Some(&other)) && free.sees_typing(None),
                "{free:?}"
            );
        }
    }

    #[test]
    fn an_outsider_is_a_stranger_to_everyone_even_a_user_of_its_placeholder_id() {
        let outsider = Access::outsider(std::sync::Arc::new(presence_core::ManualClock::new(0)));
        assert!(!outsider.is_privileged());
        assert_eq!(outsider.confined_to(), None);
        for user in ["webhook", "123"] {
            let user = UserId::new(user).unwrap();
            assert_eq!(
                outsider.onlooker(&user, Some(&org("100"))),
                Some(Onlooker::Other),
                "{user}"
            );
            assert!(!outsider.sees_truth_of(&user));
        }
    }
}
