//! `GET /openapi.json`: the gateway's own OpenAPI 3.1 document, generated from its handlers and
//! types. Every route the router serves is in it and every path in it is served, and the
//! document is open like `/health`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{clients_dir, json, run_tool, Gateway, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// `(METHOD, /path/{param})` of every operation in the document.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|key| HTTP_METHODS.contains(&key.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

const HTTP_METHODS: [&str; 8] = [
    "get", "head", "delete", "options", "patch", "post", "put", "trace",
];

/// `(METHOD, /path/{param})` of every route the router serves, read from the router itself: its
/// `Debug` output lists each route's path and the methods it allows. (Axum has no other way to
/// list routes; a change to that output fails here loudly, never passes silently.)
fn served(router: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // `routes: {RouteId(3): MethodRouter(MethodRouter { …, allow_header: Bytes(b"GET,HEAD") }), …},
    // node: Node { paths: {RouteId(3): "/jobs", …} }, fallback_router: …`
    let routes = &text[..text
        .find("fallback_router")
        .expect("the router's Debug output")];
    let paths_at = routes.find("paths: {").expect("the router lists its paths");
    let mut served = BTreeSet::new();
    for entry in routes[paths_at..].split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once(')').unwrap();
        let path = rest.split('"').nth(1).unwrap().to_owned();
        let endpoint = &routes[routes
            .find(&format!("RouteId({id}): MethodRouter("))
            .unwrap_or_else(|| panic!("route {id} ({path}) is a method router: {routes}"))..];
        let allowed = endpoint
            .split_once("allow_header: Bytes(b\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .unwrap_or_else(|| panic!("the methods of {path}: {endpoint}"))
            .0;
        // `HEAD` is served by every `GET`; it is not an operation of its own.
        for method in allowed.split(',').filter(|m| *m != "HEAD") {
            served.insert((method.to_owned(), path.clone()));
        }
    }
    assert!(!served.is_empty(), "no route read from {text}");
    served
}

#[tokio::test]
async fn every_route_served_is_documented_and_every_documented_route_is_served() {
    let (app, _backing) = Gateway::builder().build().await;
    let served = served(&app.http_service());
    drop(app);

    let gw = Gateway::start().await;
    let response = gw.get_open("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK, "open, like /health");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let document = json(response).await;
    let documented = documented(&document);
    assert_eq!(
        served, documented,
        "served (left) and documented (right) routes differ"
    );
    // And each documented operation reaches a handler: neither the fallback's 404 nor a 405.
    for (method, path) in &documented {
        let concrete = path.replace("{job_id}", "0").replace("{model_id}", "haiku");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = gw
            .request(method.clone(), &concrete)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body.contains("Not Found") && !body.contains("no route for"),
            "{method} {path} fell through to the fallback: {status} {body}"
        );
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_the_bearer_scheme_on_protected_routes() {
    let gw = Gateway::start().await;
    let document = json(gw.get_open("/openapi.json").await).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "claude-gateway");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"],
        serde_json::json!({"type": "http", "scheme": "bearer"})
    );
    // The Messages route also takes the token alone in `x-api-key`, as the Anthropic SDKs send
    // it; no other route does.
    let api_key = &document["components"]["securitySchemes"]["api_key"];
    assert_eq!(api_key["type"], "apiKey", "{api_key}");
    assert_eq!(api_key["in"], "header");
    assert_eq!(api_key["name"], "x-api-key");
    for (method, path) in documented(&document) {
        let security = &document["paths"][&path][method.to_lowercase()]["security"];
        let takes_api_key = security
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
        assert_eq!(
            takes_api_key,
            path == "/v1/messages",
            "{method} {path}: {security}"
        );
    }
    assert_eq!(
        document["paths"]["/v1/messages"]["post"]["security"],
        serde_json::json!([{"api_key": []}, {"bearer": []}])
    );
    let mut operation_ids = BTreeSet::new();
    for (method, path) in documented(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let open = ["/health", "/metrics", "/openapi.json"].contains(&path.as_str());
        assert_eq!(
            operation["security"].is_null(),
            open,
            "{method} {path}: {}",
            operation["security"]
        );
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} lists its responses"
        );
        // Generators refuse an operation whose parameters repeat (name and place).
        let parameters: Vec<_> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p["name"].to_string(), p["in"].to_string()))
            .collect();
        let unique: BTreeSet<_> = parameters.iter().collect();
        assert_eq!(
            unique.len(),
            parameters.len(),
            "{method} {path}: {parameters:?}"
        );
        assert!(operation["operationId"].is_string(), "{method} {path}");
        assert!(
            operation_ids.insert(operation["operationId"].to_string()),
            "{method} {path}: operationId {} is not unique",
            operation["operationId"]
        );
    }
}

/// Schemathesis (pinned in tests/clients/requirements.txt, installed by `scripts/test`) generates
/// requests from the document, valid and invalid, against gateways with the real CLI and the mock
/// API behind them: no 5xx, no status the document does not list, no body, header or content type
/// that violates it. Bounded: a fixed number of cases per operation and a fixed seed, so a
/// failure found once is found again, within three minutes.
///
/// The job routes get a gateway of their own with a short queue: the jobs the fuzzing starts run
/// in the background, and would otherwise queue the chat runs behind them past any timeout (a
/// full queue answers `/execute` 429, which the document lists; on chat it would be a 503).
#[tokio::test]
async fn schemathesis_finds_nothing_the_document_does_not_allow() {
    let jobs = Gateway::one_slot(3).await;
    let summary = schemathesis(&jobs, &["--include-tag", "jobs"], ALL_PHASES).await;
    eprintln!("the job routes:\n{summary}");
    drop(jobs);
    let rest = Gateway::builder().arg("max-concurrency", 1).start().await;
    let summary = schemathesis(
        &rest,
        &["--exclude-tag", "jobs", "--exclude-tag", "anthropic"],
        ALL_PHASES,
    )
    .await;
    eprintln!("the other routes:\n{summary}");
    // The Messages route on its own run, so each run's cases (most of them real runs of the CLI)
    // stay within one run's time bound. It links to no other operation: nothing to run statefully.
    let summary = schemathesis(
        &rest,
        &["--include-tag", "anthropic"],
        "examples,coverage,fuzzing",
    )
    .await;
    eprintln!("the Messages route:\n{summary}");
}

/// Runs Schemathesis's `phases` on the operations `filter` selects against `gw`, and answers its summary
/// (operations, cases, checks); panics with its report when it found anything.
async fn schemathesis(gw: &Gateway, filter: &[&str], phases: &str) -> String {
    let report = tempfile::tempdir().unwrap();
    run_tool(
        "schemathesis",
        Duration::from_secs(85),
        tokio::process::Command::new(clients_dir().join(".venv/bin/schemathesis"))
            .arg("run")
            .arg(format!("{}/openapi.json", gw.url))
            .args(filter)
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--checks", SCHEMATHESIS_CHECKS])
            .args(["--max-examples", "25", "--seed", "19", "--workers", "1"])
            .args(["--phases", phases])
            .args(["--request-timeout", "60"])
            .arg("--report-dir")
            .arg(report.path())
            .env("NO_COLOR", "1")
            .current_dir(report.path()),
    )
    .await
}

/// Every phase of schemathesis: the document's examples, its coverage of each schema's edges,
/// random fuzzing, and stateful sequences along the document's links.
const ALL_PHASES: &str = "examples,coverage,fuzzing,stateful";

/// What schemathesis checks: the issue's "no 5xx, no undocumented status, no body that violates
/// the document", and the content types and headers it documents.
const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance";
