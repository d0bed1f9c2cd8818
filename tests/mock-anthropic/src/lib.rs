//! A mock of the Anthropic Messages API that the real Claude Code CLI (2.1.330) accepts, for the
//! gateway's tests and for trying the gateway offline.
//!
//! Start one in a test, point the CLI at it, and assert on what it received:
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let mock = mock_anthropic::MockAnthropic::start().await;
//! // run `claude -p` with ANTHROPIC_BASE_URL=mock.url() (see `MockAnthropic::cli_env`) ...
//! let requests = mock.wait_for_requests(1, Duration::from_secs(30)).await.unwrap();
//! assert_eq!(requests[0].model.as_deref(), Some("claude-sonnet-4-6"));
//! # }
//! ```
//!
//! # Scripting by prompt
//!
//! Tests that drive the gateway over HTTP cannot reach the mock's Rust API, so the mock reads its
//! instructions from the prompt itself: directives of the form `[[mock:NAME ARGS]]`, ending at the
//! first `]]`, anywhere in the prompt message (the last user message that is not a tool result;
//! the CLI's `<system-reminder>` blocks are ignored).
//!
//! | directive | effect |
//! |---|---|
//! | `[[mock:text WORDS]]` | the answer is exactly `WORDS` |
//! | `[[mock:bash COMMAND]]` | the answer is a `Bash` tool call running `COMMAND` (which cannot contain `]]`); once its result comes back, the next `bash` directive is called, and after the last one the answer is `tool said: <output>`, one line per call (unless `text` is given) |
//! | `[[mock:delay MS]]` | wait `MS` milliseconds before answering; when streaming, after the first content delta, so partial output is visible first. Applies to every answer of the conversation |
//! | `[[mock:error STATUS]]` | answer HTTP `STATUS` (400..=599) with an Anthropic error body and `x-should-retry: false`, which makes the CLI give up after one attempt |
//! | `[[mock:error STATUS retry]]` | the same without `x-should-retry`: the CLI retries up to 10 times with backoff (minutes) unless `CLAUDE_CODE_MAX_RETRIES=0` |
//! | `[[mock:usage IN OUT]]` | report `IN` input and `OUT` output tokens (e.g. to exceed `--max-budget-usd`) |
//! | `[[mock:structured JSON]]` | after any `bash` calls, the answer is a `StructuredOutput` tool call (the tool the CLI offers under `--json-schema`) with `JSON` (which cannot contain `]]`) as its input; once its result comes back, the answer is text |
//! | `[[mock:structured refuse]]` | never call `StructuredOutput`, answering prose as a model that cannot fit the schema would |
//! | `[[mock:tool NAME JSON]]` | call the first offered tool whose name ends with `NAME` (an MCP tool `mcp__caller__get_weather` for `get_weather`) with the JSON object as its input; once the conversation holds the result (a `tool_result`, or in the prompt a `[Function result NAME …]` section as a gateway renders one), answer `The result of NAME: RESULT` |
//! | none | `mock answer: <first 80 characters of the prompt, directives removed>` (or the [`Script`]'s default reply) |
//!
//! Later directives of a kind win, except `bash`, which accumulates. An unknown or malformed
//! directive is answered with a 400 that names it, so a typo fails loudly.
//!
//! # What is served
//!
//! - `POST /v1/messages` (any query, e.g. `?beta=true`): streamed (SSE: `message_start`, `ping`,
//!   `content_block_start`, one `text_delta` per word or several `input_json_delta`s,
//!   `content_block_stop`, `message_delta` with `stop_reason` and output tokens, `message_stop`) when
//!   the body says `stream: true`, else one JSON message. `model` is echoed; `usage` reports
//!   [`Usage::DEFAULT`]. Missing `model` or `messages`, or a body that is not JSON: 400.
//! - `POST /v1/messages/count_tokens`, `GET /v1/models`, `GET|HEAD /api/hello`: plausible answers.
//! - anything else: 404 (405 for a wrong method), always with a JSON error body.
//!
//! Every request is recorded ([`MockAnthropic::requests`]). The crate's binary,
//! `cargo run -p mock-anthropic`, serves the mock on `$MOCK_ADDR` (default `127.0.0.1:4010`).
//!
//! [`pinned_cli`] finds the CLI version the mock is made for, as the workspace's test command
//! installs it, and fails loudly when it is missing.

mod conversation;
pub mod directive;
mod mock;
mod pinned;
mod plan;
mod record;
mod script;
mod server;
mod standalone;
mod stream;
mod wire;

pub use mock::MockAnthropic;
pub use pinned::pinned_cli;
pub use record::{RecordedRequest, WaitTimeout};
pub use script::{Script, Usage};
pub use server::serve;
pub use standalone::{banner, run_from_env, ADDR_VAR, DEFAULT_ADDR};
