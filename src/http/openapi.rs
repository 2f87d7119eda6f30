//! The API's OpenAPI description, generated from the handlers'
//! annotations (utoipa) so that it cannot drift from the routes: served at
//! `/openapi.json`, drawn at `/docs` by the vendored Swagger UI, and
//! checked in as `docs/openapi.json` (a test fails when they differ).

use super::acquire::{self, AcquireBody};
use super::api::{self, *};
use super::error::ErrorBody;
use super::{metrics, native};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "raftlock HTTP API",
        description = "Locks with fencing tokens, sessions, fenced files and cluster administration. Every call but /health (and /metrics unless serve --metrics-auth) needs `Authorization: Bearer rlk_...` (not with serve --insecure). See docs/API.md and docs/SECURITY.md."
    ),
    paths(
        acquire::acquire,
        api::release,
        api::lock_info,
        api::open_session,
        api::list_sessions,
        api::session_info,
        api::keepalive,
        api::close_session,
        api::append,
        api::file,
        api::cluster,
        api::add_member,
        api::remove_member,
        api::transfer_leader,
        api::create_credential,
        api::list_credentials,
        api::revoke_credential,
        native::propose,
        native::read,
        native::wait,
        api::health,
        metrics::metrics,
    ),
    components(schemas(
        ErrorBody,
        AcquireBody,
        ModeName,
        SessionBody,
        AppendBody,
        AddMember,
        Transfer,
        NewCredential,
        RuleBody,
        AllowName
    )),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The bearer credential scheme.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("rlk_<16 hex id>_<64 hex secret>")
            .description(Some(
                "A credential from `raftlock token create` or POST /API/v1/credentials; the first admin one is in admin.token.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The description as pretty JSON (what `/openapi.json` serves and
/// `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The generated description, made once per server.
pub(super) struct Spec(pub String);

pub(super) async fn spec(spec: actix_web::web::Data<Spec>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(spec.0.clone())
}

/// Swagger UI, vendored (assets/swagger-ui, swagger-ui-dist 5.35.0): the
/// page needs no network.
const SWAGGER_JS: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");
/// Long enough for a browser to keep the assets across page loads.
const ASSET_CACHE_S: u64 = 3600;

const DOCS_HTML: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raftlock HTTP API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>
"##;

/// Draws /openapi.json; "Authorize" takes a bearer credential, for this
/// page only (not kept in the browser's storage); requests go to the node
/// serving the page.
const INIT_JS: &str = r##"window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  persistAuthorization: false,
  deepLinking: true
});
"##;

fn asset(content_type: &str, body: &'static str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", format!("max-age={ASSET_CACHE_S}")))
        .body(body)
}

pub(super) async fn docs_page() -> actix_web::HttpResponse {
    asset("text/html; charset=utf-8", DOCS_HTML)
}

pub(super) async fn swagger_js() -> actix_web::HttpResponse {
    asset("text/javascript; charset=utf-8", SWAGGER_JS)
}

pub(super) async fn swagger_css() -> actix_web::HttpResponse {
    asset("text/css; charset=utf-8", SWAGGER_CSS)
}

pub(super) async fn init_js() -> actix_web::HttpResponse {
    asset("text/javascript; charset=utf-8", INIT_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/openapi.json is the generated description, so the checked-in
    /// copy cannot drift either. `RAFTLOCK_BLESS=1 cargo test --lib
    /// openapi` rewrites it after a change to the API.
    #[test]
    fn the_checked_in_description_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let generated = format!("{}\n", openapi_json());
        if std::env::var_os("RAFTLOCK_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the generated description: RAFTLOCK_BLESS=1 cargo test --lib openapi"
        );
    }

    #[test]
    fn the_description_has_every_door_and_the_bearer_scheme() {
        let spec: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        for p in [
            "/API/v1/locks/{name}",
            "/API/v1/credentials",
            "/API/v1/credentials/{id}",
            "/API/v1/native/propose",
            "/health",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        assert_eq!(
            spec["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(spec["security"][0]["bearer"], serde_json::json!([]));
        // /health needs no credential.
        assert_eq!(paths["/health"]["get"]["security"], serde_json::json!([{}]));
    }

    /// Every JSON success answer is described by the type its handler
    /// serializes (src/http/responses.rs), never by prose alone.
    #[test]
    fn every_success_answer_has_a_schema() {
        // Their 200 is not JSON: Prometheus text, and the native protocol's
        // postcard `NativeReply`. (/docs, its assets and /openapi.json are
        // not in the description at all.)
        const NOT_JSON: [&str; 4] = [
            "/metrics",
            "/API/v1/native/propose",
            "/API/v1/native/read",
            "/API/v1/native/wait",
        ];
        let spec: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        for p in NOT_JSON {
            assert!(paths.contains_key(p), "{p} is skipped but not served");
        }
        for (path, operations) in paths {
            for (method, op) in operations.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let successes: Vec<_> = ["200", "202"]
                    .into_iter()
                    .filter_map(|s| responses.get(s).map(|r| (s, r)))
                    .collect();
                assert!(!successes.is_empty(), "{method} {path}: no success answer");
                if NOT_JSON.contains(&path.as_str()) {
                    continue;
                }
                for (status, r) in successes {
                    assert!(
                        r["content"]["application/json"]["schema"].is_object(),
                        "{method} {path} {status}: no JSON schema"
                    );
                }
            }
        }
    }

    /// Every `$ref` names a schema the description holds (a type alias
    /// such as `SessionId` once pointed at a missing `u64`).
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &serde_json::Value, refs: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                        refs.push(r.clone());
                    }
                    m.values().for_each(|v| walk(v, refs));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let spec: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let mut refs = Vec::new();
        walk(&spec, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(&r);
            assert!(
                spec["components"]["schemas"][name].is_object(),
                "{r} resolves to nothing"
            );
        }
    }
}
