//! MCP resources: each app the token can see is a resource, `berth://apps/NAME`, whose
//! content is the app's spec as the platform holds it — URL, project, isolation, the
//! serving release's processes and environment, domains, volumes, and the names (never the
//! values) of its secrets — read through the API with the caller's token.

use berth_client::{app_path, ApiFailure, Client};
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use rmcp::ErrorData;
use serde_json::{json, Value};

const PREFIX: &str = "berth://apps/";

/// The one template: an app by name.
pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![ResourceTemplate::new(
        format!("{PREFIX}{{app}}"),
        "app",
    )
    .with_title("An app's spec")
    .with_description("URL, project, isolation, the serving release's processes and environment, domains, volumes and secret names")
    .with_mime_type("application/json")])
}

fn api_error(e: anyhow::Error) -> ErrorData {
    match e.downcast_ref::<ApiFailure>() {
        Some(f) => {
            let data = Some(json!({ "code": f.body.code, "hint": f.body.hint }));
            if f.body.code == "app_not_found" {
                ErrorData::resource_not_found(f.body.message.clone(), data)
            } else {
                ErrorData::invalid_request(f.body.message.clone(), data)
            }
        }
        None => ErrorData::internal_error(format!("{e:#}"), None),
    }
}

/// The apps the token can see, one resource each.
pub async fn list(client: &Client) -> Result<ListResourcesResult, ErrorData> {
    let apps: Vec<Value> = client.get_json("/v1/apps").await.map_err(api_error)?;
    let resources = apps
        .iter()
        .filter_map(|a| a["name"].as_str())
        .map(|name| {
            Resource::new(format!("{PREFIX}{name}"), name)
                .with_description(format!("the spec of app {name}"))
                .with_mime_type("application/json")
        })
        .collect();
    Ok(ListResourcesResult::with_all_items(resources))
}

/// The spec of the app a `berth://apps/NAME` URI names.
pub async fn read(client: &Client, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let name = uri.strip_prefix(PREFIX).ok_or_else(|| {
        ErrorData::resource_not_found(
            format!("{uri:?} is not a berth resource"),
            Some(
                json!({ "hint": "app specs are berth://apps/NAME; list them with resources/list" }),
            ),
        )
    })?;
    let app = berth_core::AppName::parse(name).map_err(|e| {
        ErrorData::invalid_params(e.to_string(), Some(json!({ "code": "invalid_app_name" })))
    })?;
    let app = app.as_str();
    let apps: Vec<Value> = client.get_json("/v1/apps").await.map_err(api_error)?;
    let Some(summary) = apps.into_iter().find(|a| a["name"] == app) else {
        return Err(ErrorData::resource_not_found(
            format!("app {app:?} does not exist"),
            Some(json!({ "code": "app_not_found" })),
        ));
    };
    let releases: Vec<Value> = client
        .get_json(&app_path(app, "/releases"))
        .await
        .map_err(api_error)?;
    let serving = summary["current_release"].as_u64();
    let release = releases
        .iter()
        .find(|r| serving.is_some() && r["version"].as_u64() == serving);
    let domains: Value = client
        .get_json(&app_path(app, "/domains"))
        .await
        .map_err(api_error)?;
    let volumes: Value = client
        .get_json(&app_path(app, "/volumes"))
        .await
        .map_err(api_error)?;
    let secrets: Vec<Value> = client
        .get_json(&app_path(app, "/secrets"))
        .await
        .map_err(api_error)?;
    let spec = json!({
        "name": app,
        "url": summary["url"],
        "project": summary["project"],
        "isolation": summary["isolation"],
        "release": release.map(|r| json!({
            "version": r["version"],
            "image": r["image"],
            "processes": r["config"]["processes"],
            "env": r["config"]["env"],
            "created_at": r["created_at"],
        })),
        "domains": domains,
        "volumes": volumes,
        "secrets": secrets.iter().filter_map(|s| s["name"].as_str()).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&spec)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(ReadResourceResult::new(vec![ResourceContents::text(
        text, uri,
    )
    .with_mime_type("application/json")]))
}
