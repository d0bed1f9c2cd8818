//! Webhooks: a POST to the job's `callback_url` when it starts and when it ends.
//!
//! - **Durable.** A job's two webhooks are rows the store inserts with the job itself, pending;
//!   the sender claims those whose moment has come (the job left the queue, or ended) with a
//!   lease, sends, and records the try. A restart finds them where they were; a sender that dies
//!   mid-send leaves a lease that runs out, and the webhook is sent again: at least once, never
//!   lost. With PostgreSQL every replica's sender claims with `FOR UPDATE SKIP LOCKED`, so no two
//!   send one webhook at once.
//! - **Signed** as Standard Webhooks does it: `webhook-id` (the same for every try),
//!   `webhook-timestamp`, and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//!   with `WEBHOOK_SECRET`.
//! - **Retried** on errors, timeouts and statuses other than 2xx, `WEBHOOK_RETRY_MS` after the
//!   first failure and twice as long after each next one, up to `WEBHOOK_MAX_ATTEMPTS` tries.
//! - **Only where allowed.** `WEBHOOK_ALLOW` lists host names and networks; link-local and
//!   metadata addresses never. A `callback_url` is checked at submission, and every address a
//!   name resolves to is checked again when it is sent (the client's resolver drops what is not
//!   allowed, so a name rebound to a refused address after submission is not called); redirects
//!   are not followed and no proxy is used.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use crate::config::{Secret, WebhookAllow, WebhookSettings};

use super::record::{format_iso, JobStatus, JobSummary, WebhookAttempt};
use super::store::{DueWebhook, JobStore, WebhookClaim, WebhookKind, WebhookTried};

/// Webhooks claimed in one go.
const BATCH: usize = 16;
/// The longest a sender sleeps without looking for due webhooks (a replica's jobs poke only
/// their own sender).
const POLL: Duration = Duration::from_secs(5);
/// How long past its request timeout a claimed webhook stays leased.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a name's resolution may take at submission.
const RESOLVE_WAIT: Duration = Duration::from_secs(5);
/// The longest `callback_url` accepted.
const MAX_URL: usize = 2048;
/// Longest error kept per try.
const ERROR_CHARS: usize = 300;

/// The webhook sender. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn JobStore>,
    settings: WebhookSettings,
    allow: Arc<WebhookAllow>,
    client: reqwest::Client,
    /// A job started or ended here: look for due webhooks now.
    wake: Notify,
    /// Set at shutdown: the sender stops.
    stopped: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A sender over `store`; [`start`](Self::start) sets it going.
    pub(crate) fn new(store: Arc<dyn JobStore>, settings: WebhookSettings) -> Result<Self, String> {
        let allow = Arc::new(settings.allow.clone());
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Vetted {
                allow: Arc::clone(&allow),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .user_agent("claude-gateway")
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                settings,
                allow,
                client,
                wake: Notify::new(),
                stopped: AtomicBool::new(false),
            }),
        })
    }

    /// Starts the sending task; it ends at [`stop`](Self::stop) or when the last handle goes.
    pub(crate) fn start(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(send_loop(weak));
    }

    /// A job started or ended: look for due webhooks now.
    pub(crate) fn poke(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops the sender (at shutdown); what is pending stays stored for the next start.
    pub(crate) fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// `WEBHOOK_URL`, for jobs that give no `callback_url`.
    pub(crate) fn default_url(&self) -> Option<&str> {
        self.inner.settings.default_url.as_ref().map(Secret::expose)
    }

    /// Checks a `callback_url` at submission: http or https, no credentials, a host the
    /// allow-list permits, and no address of it refused.
    pub(crate) async fn check_url(&self, text: &str) -> Result<(), String> {
        check_url(&self.inner.allow, text).await
    }
}

/// See [`Webhooks::check_url`].
pub(crate) async fn check_url(allow: &WebhookAllow, text: &str) -> Result<(), String> {
    if allow.is_empty() {
        return Err("webhooks are off: WEBHOOK_ALLOW lists no destination".into());
    }
    if text.len() > MAX_URL {
        return Err(format!("it is longer than {MAX_URL} characters"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("it is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs are allowed".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => permitted_ip(allow, IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => permitted_ip(allow, IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let listed = allow.lists_host(name);
            let port = url.port_or_known_default().unwrap_or(80);
            let resolved =
                tokio::time::timeout(RESOLVE_WAIT, tokio::net::lookup_host((name, port))).await;
            let addrs: Vec<SocketAddr> = match resolved {
                Ok(Ok(addrs)) => addrs.collect(),
                _ if listed => return Ok(()), // Listed by name: it may resolve later.
                _ => {
                    return Err(format!(
                        "{name} is not on WEBHOOK_ALLOW and does not resolve"
                    ))
                }
            };
            if let Some(bad) = addrs.iter().find(|a| crate::config::never_called(a.ip())) {
                return Err(format!(
                    "{name} resolves to {}, an address webhooks never go to",
                    bad.ip()
                ));
            }
            if addrs.is_empty() || !addrs.iter().all(|a| allow.permits(a.ip(), listed)) {
                return Err(format!("{name} is not on WEBHOOK_ALLOW"));
            }
            Ok(())
        }
        None => Err("it has no host".into()),
    }
}

/// Whether `ip` may be called, in the caller's words.
fn permitted_ip(allow: &WebhookAllow, ip: IpAddr) -> Result<(), String> {
    if crate::config::never_called(ip) {
        return Err(format!(
            "{ip} is an address webhooks never go to (link-local or metadata)"
        ));
    }
    if !allow.permits(ip, false) {
        return Err(format!("{ip} is not on WEBHOOK_ALLOW"));
    }
    Ok(())
}

/// The client's resolver: only the addresses the allow-list permits, checked when the request
/// is sent.
struct Vetted {
    allow: Arc<WebhookAllow>,
}

impl reqwest::dns::Resolve for Vetted {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.allow);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let listed = allow.lists_host(&host);
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let permitted: Vec<SocketAddr> =
                addrs.filter(|a| allow.permits(a.ip(), listed)).collect();
            if permitted.is_empty() {
                return Err(format!("no address of {host} is allowed for webhooks").into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Claims due webhooks and sends them, then sleeps until the next is due, a poke, or
/// [`POLL`]; ends when the sender is stopped or dropped.
fn send_loop(weak: Weak<Inner>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopped.load(Ordering::SeqCst) {
                return;
            }
            let now = Utc::now();
            let lease = TimeDelta::from_std(inner.settings.timeout + LEASE_MARGIN)
                .unwrap_or(TimeDelta::MAX);
            match inner
                .store
                .claim_webhooks(WebhookClaim::new(now, now + lease, BATCH))
                .await
            {
                Ok(due) if !due.is_empty() => {
                    let sends = due.into_iter().map(|webhook| inner.send(webhook));
                    futures_util::future::join_all(sends).await;
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not read due webhooks"),
            }
            let next = inner.store.next_webhook(now).await.ok().flatten();
            let wait = next
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .map_or(POLL, |wait| wait.min(POLL));
            let woken = async { inner.wake.notified().await };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = woken => {}
            }
        }
    })
}

impl Inner {
    /// One try of `webhook`, recorded.
    async fn send(&self, webhook: DueWebhook) {
        let tried = self.try_once(&webhook).await;
        match tried.state {
            "delivered" => tracing::info!(id = %webhook.id, "webhook delivered"),
            "failed" => {
                tracing::warn!(id = %webhook.id, attempts = webhook.attempts + 1, "webhook given up")
            }
            _ => {}
        }
        if let Err(error) = self.store.webhook_tried(webhook.id.clone(), tried).await {
            // Its lease runs out and it is sent again: at least once.
            tracing::warn!(id = %webhook.id, %error, "could not record a webhook's try");
        }
    }

    async fn try_once(&self, webhook: &DueWebhook) -> WebhookTried {
        let now = Utc::now();
        if webhook.kind == WebhookKind::Started && webhook.job.started_at.is_none() {
            // It ended without starting (cancelled in the queue): only its end is told.
            return WebhookTried {
                attempt: None,
                state: "skipped",
                next_at: now,
            };
        }
        let body = body(webhook, now);
        let timestamp = now.timestamp().to_string();
        let mut request = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &webhook.id)
            .header("webhook-timestamp", &timestamp);
        if let Some(secret) = &self.settings.secret {
            request = request.header(
                "webhook-signature",
                sign(&secret.0, &webhook.id, &timestamp, &body),
            );
        }
        let refused = match url::Url::parse(&webhook.url)
            .ok()
            .and_then(|u| match u.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            }) {
            // An address in the URL is not resolved, so the resolver cannot check it.
            Some(ip) => permitted_ip(&self.allow, ip).err(),
            None => None,
        };
        let (status_code, error) = match refused {
            Some(why) => (None, Some(why)),
            None => match request.body(body).send().await {
                Ok(response) if response.status().is_success() => {
                    (Some(response.status().as_u16()), None)
                }
                Ok(response) => (
                    Some(response.status().as_u16()),
                    Some(format!("the receiver answered {}", response.status())),
                ),
                Err(error) => (None, Some(describe(&error))),
            },
        };
        let attempt = WebhookAttempt {
            at: format_iso(&now),
            status_code,
            error: error.map(|e| e.chars().take(ERROR_CHARS).collect()),
        };
        let tries = webhook.attempts.saturating_add(1);
        let (state, next_at) = if attempt.error.is_none() {
            ("delivered", now)
        } else if tries >= self.settings.max_attempts {
            ("failed", now)
        } else {
            let wait = backoff(self.settings.first_retry, tries);
            (
                "pending",
                now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX),
            )
        };
        WebhookTried {
            attempt: Some(attempt),
            state,
            next_at,
        }
    }
}

/// The wait after the `tries`-th failed try: `first`, doubled for each earlier failure, at most
/// [`MAX_BACKOFF`].
fn backoff(first: Duration, tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(31);
    first
        .checked_mul(1u32 << doublings)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// A request error in one line, its cause included.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "no answer in time".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The body: what happened to which job, and when; callers read the record for the rest.
fn body(webhook: &DueWebhook, now: DateTime<Utc>) -> String {
    let job: &JobSummary = &webhook.job;
    let status = match webhook.kind {
        // Sent once the job left the queue: it is (or was) running.
        WebhookKind::Started => JobStatus::Running,
        WebhookKind::Ended => job.status,
    };
    serde_json::json!({
        "type": format!("job.{}", webhook.kind.as_str()),
        "timestamp": format_iso(&now),
        "job_id": job.job_id,
        "status": status,
        "created_at": format_iso(&job.created_at),
        "started_at": job.started_at.as_ref().map(format_iso),
        "finished_at": match webhook.kind {
            WebhookKind::Started => None,
            WebhookKind::Ended => job.finished_at.as_ref().map(format_iso),
        },
    })
    .to_string()
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (Standard Webhooks).
pub(crate) fn sign(secret: &[u8], id: &str, timestamp: &str, body: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret =
            crate::config::WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret.0,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn waits_double_up_to_an_hour() {
        let first = Duration::from_millis(500);
        assert_eq!(backoff(first, 1), Duration::from_millis(500));
        assert_eq!(backoff(first, 2), Duration::from_secs(1));
        assert_eq!(backoff(first, 4), Duration::from_secs(4));
        assert_eq!(backoff(first, 40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn refused_destinations_are_named() {
        let allow = WebhookAllow::parse("127.0.0.1/32,169.254.0.0/16,hooks.example").unwrap();
        assert_eq!(check_url(&allow, "http://127.0.0.1:9/x").await, Ok(()));
        for (url, why) in [
            ("http://169.254.169.254/latest/meta-data", "never go to"),
            ("http://[fe80::1]/", "never go to"),
            ("http://127.0.0.2/", "not on WEBHOOK_ALLOW"),
            ("ftp://127.0.0.1/", "only http and https"),
            ("http://user:pw@127.0.0.1/", "credentials"),
            ("http://unlisted.invalid/", "not on WEBHOOK_ALLOW"),
        ] {
            let error = check_url(&allow, url).await.expect_err(url);
            assert!(error.contains(why), "{url}: {error}");
        }
        let off = WebhookAllow::default();
        assert!(check_url(&off, "http://127.0.0.1/").await.is_err());
    }
}
