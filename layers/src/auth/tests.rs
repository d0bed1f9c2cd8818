use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderValue, Request, Response, StatusCode};
use tokio_test::{assert_pending, assert_ready_ok};
use tower_test::mock;

use super::*;

/// What a client would see, plus who the inner service was told the caller is.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The inner service was called with this caller name.
    Accepted(String),
    /// The layer answered on its own.
    Refused(StatusCode, String),
}

fn tokens() -> Tokens {
    let mut tokens = Tokens::new();
    tokens.insert("ci", "s3cret");
    tokens.insert("alice", "another-secret");
    tokens
}

fn layer() -> BearerAuthLayer<impl Fn(AuthFailure) -> Response<String> + Clone> {
    BearerAuthLayer::new(tokens(), |failure: AuthFailure| {
        let mut res = Response::new(failure.to_string());
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        res
    })
}

async fn send(authorization: Option<HeaderValue>) -> Outcome {
    let mut headers = http::HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(AUTHORIZATION, value);
    }
    send_through(layer(), headers).await
}

/// Sends one request with `headers` through `layer`, in front of an inner service that answers
/// when called: what the client sees, and who the inner service was told the caller is.
async fn send_through<R>(layer: BearerAuthLayer<R>, headers: http::HeaderMap) -> Outcome
where
    R: Reject<AuthFailure, String> + Clone,
{
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Response<String>, _>(layer);
    let mut req = Request::new(());
    *req.headers_mut() = headers;
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req);
    let responder = async {
        let (req, send) = handle.next_request().await.expect("inner service called");
        let caller = req.extensions().get::<AuthenticatedCaller>().cloned();
        send.send_response(Response::new("inner".to_string()));
        caller
    };
    tokio::select! {
        res = fut => {
            let res = res.expect("rejections are responses");
            // The layer answered by itself: the inner service must not have seen the request.
            assert_pending!(handle.poll_request());
            Outcome::Refused(res.status(), res.into_body())
        }
        caller = responder => {
            Outcome::Accepted(caller.expect("caller extension set").name.to_string())
        }
    }
}

fn bearer(value: &'static str) -> Option<HeaderValue> {
    Some(HeaderValue::from_static(value))
}

/// Sends one request per header value, each expected to end in `expected`.
async fn assert_each(headers: &[&'static str], expected: Outcome) {
    for &header in headers {
        assert_eq!(
            send(bearer(header)).await,
            expected,
            "Authorization: {header}"
        );
    }
}

fn missing() -> Outcome {
    Outcome::Refused(StatusCode::UNAUTHORIZED, "Missing bearer token".into())
}

fn accepted(owner: &str) -> Outcome {
    Outcome::Accepted(owner.into())
}

fn invalid() -> Outcome {
    Outcome::Refused(StatusCode::UNAUTHORIZED, "Invalid token".into())
}

#[tokio::test]
async fn right_token_reaches_inner_with_its_name() {
    assert_eq!(send(bearer("Bearer s3cret")).await, accepted("ci"));
}

#[tokio::test]
async fn second_token_is_accepted_under_its_own_name() {
    assert_eq!(
        send(bearer("Bearer another-secret")).await,
        accepted("alice")
    );
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let ci = accepted("ci");
    assert_each(&["bearer s3cret", "BEARER s3cret"], ci).await;
}

#[tokio::test]
async fn wrong_token_is_invalid() {
    assert_each(&["Bearer s3cre", "Bearer s3cret2"], invalid()).await;
}

#[tokio::test]
async fn no_header_is_missing() {
    assert_eq!(send(None).await, missing());
}

#[tokio::test]
async fn bearer_without_token_is_missing() {
    assert_each(&["Bearer", "Bearer    "], missing()).await;
}

#[tokio::test]
async fn other_scheme_is_missing() {
    assert_each(&["Basic czNjcmV0", "s3cret"], missing()).await;
}

#[tokio::test]
async fn non_utf8_token_is_invalid() {
    let value = HeaderValue::from_bytes(b"Bearer s3\xffcret").expect("obs-text is a valid header");
    assert_eq!(send(Some(value)).await, invalid());
}

#[tokio::test]
async fn empty_token_set_refuses_everyone() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Response<String>, _>(
        BearerAuthLayer::new(Tokens::new(), |failure: AuthFailure| {
            Response::new(failure.to_string())
        }),
    );
    let mut req = Request::new(());
    req.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
    assert_ready_ok!(svc.poll_ready());
    let res = svc.call(req).await.expect("rejections are responses");
    assert_eq!(res.body(), "Missing bearer token");
    assert_pending!(handle.poll_request());
}

#[test]
fn debug_shows_names_but_no_secret_or_digest() {
    assert_eq!(
        format!("{:?}", tokens()),
        r#"Tokens { names: ["ci", "alice"] }"#
    );
    assert_eq!(
        format!("{:?}", layer()),
        r#"BearerAuthLayer { tokens: Tokens { names: ["ci", "alice"] }, source: Bearer, .. }"#
    );
}

#[test]
fn verify_and_len() {
    let tokens = tokens();
    assert_eq!(tokens.len(), 2);
    assert!(!tokens.is_empty());
    assert!(Tokens::new().is_empty());
    assert_eq!(
        tokens.verify(b"s3cret").map(|c| c.name.to_string()),
        Some("ci".to_string())
    );
    assert_eq!(tokens.verify(b"nope"), None);
    assert_eq!(
        Tokens::single("x", "y").names().collect::<Vec<_>>(),
        vec!["x"]
    );
}

/// Sends one request with `headers` through a layer that also reads `x-api-key`.
async fn send_api_key(headers: &[(&'static str, &'static str)]) -> Outcome {
    let layer = layer().token_source(TokenSource::BearerOrHeader(HeaderName::from_static(
        "x-api-key",
    )));
    let mut map = http::HeaderMap::new();
    for &(name, value) in headers {
        map.append(name, HeaderValue::from_static(value));
    }
    send_through(layer, map).await
}

#[tokio::test]
async fn an_api_key_header_is_checked_against_the_same_tokens() {
    for (headers, outcome) in [
        (&[("x-api-key", "another-secret")][..], accepted("alice")),
        (&[("x-api-key", " s3cret ")], accepted("ci")),
        (&[("x-api-key", "s3cre")], invalid()),
        (&[("x-api-key", "  ")], missing()),
        (&[], missing()),
    ] {
        assert_eq!(send_api_key(headers).await, outcome, "{headers:?}");
    }
}

#[tokio::test]
async fn with_an_api_key_source_bearer_still_works() {
    assert_eq!(
        send_api_key(&[("authorization", "Bearer s3cret")]).await,
        accepted("ci")
    );
    assert_eq!(
        send_api_key(&[("authorization", "Bearer nope")]).await,
        invalid()
    );
    // The same token in both headers is one credential.
    assert_eq!(
        send_api_key(&[("authorization", "Bearer s3cret"), ("x-api-key", "s3cret")]).await,
        accepted("ci")
    );
    // A wrong bearer beside a right key is still a wrong credential, never a fallback.
    assert!(matches!(
        send_api_key(&[("authorization", "Bearer nope"), ("x-api-key", "s3cret")]).await,
        Outcome::Refused(StatusCode::UNAUTHORIZED, _)
    ));
}

#[tokio::test]
async fn differing_or_repeated_api_keys_are_ambiguous() {
    let ambiguous = Outcome::Refused(StatusCode::UNAUTHORIZED, AuthFailure::Ambiguous.to_string());
    assert_eq!(
        send_api_key(&[
            ("authorization", "Bearer s3cret"),
            ("x-api-key", "another-secret")
        ])
        .await,
        ambiguous
    );
    assert_eq!(
        send_api_key(&[("x-api-key", "s3cret"), ("x-api-key", "s3cret")]).await,
        ambiguous
    );
}

#[test]
fn the_bearer_source_ignores_an_api_key_header() {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("s3cret"));
    assert_eq!(tokens().authorize(&headers), Err(AuthFailure::Missing));
    let source = TokenSource::BearerOrHeader(HeaderName::from_static("x-api-key"));
    assert_eq!(
        tokens()
            .authorize_from(&headers, &source)
            .map(|c| c.name.to_string()),
        Ok("ci".to_string())
    );
}
