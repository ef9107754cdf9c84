//! The API's OpenAPI 3.1 document, generated from the handlers' annotations (utoipa) and
//! served at `/openapi.json`. What every endpoint shares — the bearer token, the error body,
//! the refusals the gate can answer with, `Idempotency-Key` on changes, the shape of an app
//! name — is added here once rather than on each handler.

use axum::Json;
use berth_core::api::ErrorBody;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Object, ObjectBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
    Schema, Type,
};
use utoipa::{Modify, OpenApi};

/// App names as the API accepts them: DNS labels.
pub const APP_NAME_PATTERN: &str = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "berth API",
        description = "The one API into a berth platform: the CLI, the web UI and the MCP server are its clients. \
            Every call but /v1/health and /openapi.json carries `Authorization: Bearer <token>`; \
            changes accept an `Idempotency-Key`; errors are a JSON body with a stable `code`, a `message` and a `hint`."
    ),
    paths(
        health,
        crate::api::list_apps,
        crate::api::create_app,
        crate::api::destroy_app,
        crate::api::deploy,
        crate::api::deploy_image,
        crate::api::images,
        crate::api::scale,
        crate::api::redeploy,
        crate::api::kill_instance,
        crate::api::canary_command,
        crate::api::release_sbom,
        crate::api::releases,
        crate::api::rollback,
        crate::api::env_list,
        crate::api::env_change,
        crate::api::instances,
        crate::api::drift,
        crate::api::drift_restore,
        crate::api::build_log,
        crate::api::secrets_list,
        crate::api::secrets_change,
        crate::api::secrets_rotate_key,
        crate::api::gc,
        crate::api::probes,
        crate::api::domains_list,
        crate::api::domains_add,
        crate::api::domains_remove,
        crate::api::ca_certificate,
        crate::api::volumes_list,
        crate::api::volumes_create,
        crate::api::volumes_destroy,
        crate::api::volumes_snapshot,
        crate::api::volumes_restore,
        crate::api::database_info,
        crate::api::database_create,
        crate::api::database_backup,
        crate::api::database_restore,
        crate::api::backup_create,
        crate::api::logs,
        crate::api::log_events,
        crate::api::metrics,
        crate::api::dora,
        crate::api::slo,
        crate::api::slo_rules,
        crate::api::dns_status,
        crate::api::gitops_add,
        crate::api::gitops_list,
        crate::api::gitops_remove,
        crate::api::platform_plan,
        crate::api::platform_apply,
        crate::api::git_connect,
        crate::api::git_connection,
        crate::api::deploy_key_make,
        crate::api::deploy_key_get,
        crate::api::git_disconnect,
        crate::api::alerts,
        crate::api::tokens_list,
        crate::api::tokens_create,
        crate::api::tokens_revoke,
        crate::api::audit_list,
        crate::api::projects_list,
        crate::api::projects_create,
        crate::api::tenants_list,
        crate::api::tenants_create,
        crate::api::login_info,
        crate::api::login_token,
        crate::api::whoami,
        crate::api::people_list,
        crate::api::people_add,
        crate::api::people_remove,
        crate::api::registries_list,
        crate::api::registries_login,
        crate::api::registries_logout,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Shared)
)]
pub struct ApiDoc;

/// The document, built once.
pub fn spec() -> &'static Document {
    static SPEC: std::sync::OnceLock<Document> = std::sync::OnceLock::new();
    SPEC.get_or_init(ApiDoc::openapi)
}

/// `GET /openapi.json`.
pub async fn document() -> Json<&'static Document> {
    Json(spec())
}

/// Whether the API answers, and where it is served over HTTPS.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The platform's own HTTPS address at the edge (`https://berth.example.com/`): this
    /// API, git remotes and webhooks; absent when the edge serves no HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_url: Option<String>,
    /// Its certificate comes from berth's local CA (`GET /v1/ca`), not a public one.
    #[serde(default)]
    pub local_ca: bool,
}

/// `GET /v1/health`.
#[utoipa::path(get, path = "/v1/health", tag = "platform", security(()),
    responses((status = 200, description = "The API answers", body = Health)))]
pub async fn health(
    axum::extract::State(p): axum::extract::State<std::sync::Arc<crate::platform::Platform>>,
) -> Json<Health> {
    let platform_url = p.cfg.platform_url();
    let local_ca = p
        .cfg
        .platform_hosts()
        .last()
        .is_some_and(|h| p.certificates.issuer_for(h) == crate::certificates::Issuer::Local);
    Json(Health {
        status: "ok".into(),
        platform_url,
        local_ca,
    })
}

/// Adds what every operation shares.
struct Shared;

/// Refusals any authenticated endpoint can answer with.
const REFUSALS: [(&str, &str); 7] = [
    ("400", "Bad input: the code names the problem"),
    ("401", "No token, or one that is unknown, revoked or expired"),
    ("403", "The token's role or project does not reach this"),
    ("404", "No such app or object (or one in another project)"),
    ("409", "A conflict: the Idempotency-Key was used for another request, or the object's state forbids it"),
    ("422", "The change would take a project or tenant past its quota (the code is quota_exceeded)"),
    ("500", "The platform failed; the details are in its log"),
];

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a token from `berth up` or `berth tokens create`"))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = matches!(
                path.as_str(),
                "/v1/health" | "/v1/login" | "/v1/login/token"
            );
            let ops = [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (true, item.put.as_mut()),
                (true, item.patch.as_mut()),
                (true, item.delete.as_mut()),
            ];
            for (changes, op) in ops {
                let Some(op) = op else { continue };
                if !public {
                    add_refusals(op, path);
                }
                if changes && !public {
                    add_idempotency_key(op);
                }
                constrain_app_names(op);
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn add_refusals(op: &mut Operation, path: &str) {
    let mut refusals: Vec<(&str, &str)> = REFUSALS.to_vec();
    if op.request_body.is_some() {
        refusals.push(("413", "The body is over the platform's limit"));
        refusals.push((
            "415",
            "The body is not of the media type the endpoint takes",
        ));
    }
    if path.ends_with("/deploys") || path.ends_with("/database") {
        refusals.push((
            "503",
            "A part the platform needs for this is not there (a builder, the database server)",
        ));
    }
    for (status, description) in refusals {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

fn add_idempotency_key(op: &mut Operation) {
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .description(Some(
            "Repeat the request with the same key and body to get the first answer again, \
             with nothing done twice; the same key with another body is refused (409)",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[\\x21-\\x7e]+$")),
        ))
        .build();
    op.parameters.get_or_insert_with(Vec::new).push(key);
}

fn constrain_app_names(op: &mut Operation) {
    for param in op.parameters.iter_mut().flatten() {
        if param.name == "app" && param.parameter_in == ParameterIn::Path {
            param.schema = Some(RefOr::T(Schema::Object(app_name_schema())));
        }
    }
}

fn app_name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(APP_NAME_PATTERN))
        .max_length(Some(63))
        .build()
}
