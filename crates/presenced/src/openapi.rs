//! The OpenAPI document of the whole REST API, generated from the route handlers (utoipa)
//! and served at `/openapi.json`.

use utoipa::OpenApi as _;

use crate::error::ErrorBody;
use crate::http::{admin, events, presence, reports, typing};

/// The document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "presenced", description = "Presence service: who is online, away or offline, right now."),
    paths(presence::list_online, presence::count, presence::status, presence::status_batch,
        presence::set_away, presence::set_online, presence::activity, presence::heartbeat,
        presence::end_heartbeat, presence::set_zone, presence::set_org,
        presence::set_custom_status, presence::clear_custom_status, presence::set_privacy,
        presence::list_sessions, presence::end_session,
        reports::user_history, reports::inactive, reports::set_location, reports::clear_location,
        reports::nearby,
        events::events, typing::typing_now, admin::nodes, admin::repair, admin::webhooks),
    components(schemas(presence_core::PresenceView, presence_core::PresenceEvent, presence_core::RepairReport, ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", scheme);
    }
}
