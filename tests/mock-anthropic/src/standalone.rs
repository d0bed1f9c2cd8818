//! Running the mock as a program: the crate's binary (`cargo run -p mock-anthropic`).

use std::io;

use tokio::net::TcpListener;

use crate::script::Script;
use crate::server::serve;

/// Environment variable naming the address to listen on.
pub const ADDR_VAR: &str = "MOCK_ADDR";
/// Address used when [`ADDR_VAR`] is unset.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4010";

/// Serves the mock on `$MOCK_ADDR` (default [`DEFAULT_ADDR`]), logging each request on stderr,
/// until Ctrl-C.
pub async fn run_from_env() -> io::Result<()> {
    let addr = std::env::var(ADDR_VAR).unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let url = format!("http://{}", listener.local_addr()?);
    println!("{}", banner(&url));
    serve(listener, Script::new().log_requests(true), async {
        // If the signal handler cannot be installed, run until killed rather than stop at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await?;
    println!("mock-anthropic: stopped");
    Ok(())
}

/// What the program prints at start: where it listens, how to point the CLI at it, the directives.
pub fn banner(url: &str) -> String {
    format!(
        "mock-anthropic: mock Anthropic Messages API listening on {url}  (Ctrl-C stops it)

Point Claude Code (or the gateway's agents) at it:
  ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=anything CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1

Script answers from the prompt with directives:
  [[mock:text WORDS]]     answer exactly WORDS
  [[mock:bash COMMAND]]   call the Bash tool with COMMAND, then answer \"tool said: <output>\"
                          (repeat for several calls, made in order; COMMAND cannot contain \"]]\")
  [[mock:structured JSON]] call the StructuredOutput tool (offered under --json-schema) with JSON
  [[mock:structured refuse]] never call StructuredOutput; answer prose
  [[mock:delay MS]]       wait MS milliseconds (when streaming: after the first text delta)
  [[mock:error STATUS]]   answer HTTP STATUS with an Anthropic error (the CLI gives up at once;
                          add \" retry\" to let it retry with backoff)
  [[mock:usage IN OUT]]   report IN input and OUT output tokens
  no directive            answer \"mock answer: <first 80 characters of the prompt>\""
    )
}
