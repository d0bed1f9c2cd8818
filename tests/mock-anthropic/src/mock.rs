//! [`MockAnthropic`]: a mock served in the background of a test, stopped when dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;

use crate::record::{RecordedRequest, Recorder, WaitTimeout};
use crate::script::Script;
use crate::server::{self, Shared};

/// A running mock of the Anthropic Messages API. Dropping it stops accepting connections and ends
/// scripted delays; it must be created inside a tokio runtime.
#[derive(Debug)]
pub struct MockAnthropic {
    /// Where it listens; `url()` is built from it.
    addr: SocketAddr,
    /// The requests received, shared with the server.
    recorder: Arc<Recorder>,
    /// Set to true on drop: stops the accept loop and pending delays.
    stop: watch::Sender<bool>,
}

impl MockAnthropic {
    /// Starts a mock with the default [`Script`] on `127.0.0.1` and a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound, which leaves a test nothing to do.
    pub async fn start() -> Self {
        Self::start_with(Script::new()).await
    }

    /// Starts a mock with `script` on `127.0.0.1` and a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start_with(script: Script) -> Self {
        match Self::bind("127.0.0.1:0", script).await {
            Ok(mock) => mock,
            Err(e) => panic!("mock-anthropic: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Starts a mock with `script` on `addr`.
    pub async fn bind(addr: impl ToSocketAddrs, script: Script) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let recorder = Arc::new(Recorder::default());
        let (stop, stopped) = watch::channel(false);
        let shared = Shared::new(script, recorder.clone(), stopped.clone());
        tokio::spawn(async move {
            if let Err(e) = server::run(listener, shared, stopped).await {
                eprintln!("mock-anthropic: server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            recorder,
            stop,
        })
    }

    /// The base URL to give the CLI as `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Environment that points the Claude Code CLI at this mock and keeps it from calling anywhere
    /// else: add these to the CLI's (cleared) environment.
    pub fn cli_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ANTHROPIC_BASE_URL", self.url()),
            ("ANTHROPIC_API_KEY", "mock-anthropic-key".to_owned()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
        ]
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorder.all()
    }

    /// The Messages API calls (`POST /v1/messages`) received so far, in arrival order.
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.recorder
            .all()
            .into_iter()
            .filter(RecordedRequest::is_message)
            .collect()
    }

    /// Waits until at least `n` requests have arrived, for at most `timeout`, and returns them all.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, WaitTimeout> {
        self.recorder.wait_for(n, timeout).await
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
