//! The caller's functions (OpenAI `tools`) as tools of the agent: offered by an MCP server on stdio
//! that the gateway's own executable serves, caught in the agent's stream-json output when the
//! agent calls one, and the run then ended so that the caller can run the function itself.
//!
//! The bridge, end to end:
//!
//! 1. A request with functions gets the extension [`CallerFunctions`]: the run's CLI is given
//!    `--mcp-config` naming one stdio server, [`SERVER`], started as
//!    `<gateway executable> functions-mcp <definitions as JSON>` ([`SUBCOMMAND`]). The CLI lists
//!    its tools (`mcp__caller__<name>`) next to its own; the agent keeps every tool it has.
//! 2. The server answers `initialize` and `tools/list`, and never answers `tools/call`: the
//!    function is the caller's to run, not the gateway's.
//! 3. The run reads each `assistant` event; once one holds `tool_use` blocks of the server's
//!    tools, the run ends there (its process group killed, as a deadline ends it) and the outcome
//!    carries the calls ([`FunctionCall`]), which the routes answer as OpenAI `tool_calls`.
//!
//! Nothing of the run's session is kept for such an answer: the next request carries the whole
//! conversation, calls and results included, and the prompt renders it.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The MCP server's name in the CLI's configuration: its tools are `mcp__caller__<function>`.
pub const SERVER: &str = "caller";

/// The hidden first argument that makes the gateway's executable serve the functions on stdio.
pub const SUBCOMMAND: &str = "functions-mcp";

/// The prefix the CLI gives the tools of [`SERVER`].
const TOOL_PREFIX: &str = "mcp__caller__";

/// One function a caller offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// Its name, as the caller will see it called.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of its arguments (an object schema).
    pub parameters: Map<String, Value>,
}

/// Request extension: offer these functions to the agent and end the run at the first call of
/// one. `bin` is the executable that serves them ([`SUBCOMMAND`]).
#[derive(Debug, Clone)]
pub struct CallerFunctions {
    /// The gateway's own executable.
    pub bin: std::path::PathBuf,
    /// The functions offered.
    pub functions: Vec<Function>,
}

impl CallerFunctions {
    /// The `mcpServers` entry that starts the server.
    pub(crate) fn server_config(&self) -> Value {
        let definitions = serde_json::to_string(&self.functions).unwrap_or_default();
        json!({
            "type": "stdio",
            "command": self.bin,
            "args": [SUBCOMMAND, definitions],
            // The CLI (2.1.x) otherwise connects MCP servers in the background and defers their
            // tools behind its tool search: the first request to the model could go out without
            // them. `alwaysLoad` makes it wait for the server and offer its tools directly.
            "alwaysLoad": true,
        })
    }
}

/// A call of one of the caller's functions, as the agent made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// The model's id of the call (`toolu_…`).
    pub id: String,
    /// The function's name (without the CLI's prefix).
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// The calls of the caller's functions in one stream-json event: the `tool_use` blocks of an
/// `assistant` event that name a tool of [`SERVER`].
pub(crate) fn calls_in(event: &Value) -> Vec<FunctionCall> {
    if event.get("type").and_then(Value::as_str) != Some("assistant") {
        return Vec::new();
    }
    let Some(blocks) = event.pointer("/message/content").and_then(Value::as_array) else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_use"))
        .filter_map(|block| {
            let name = block.get("name")?.as_str()?.strip_prefix(TOOL_PREFIX)?;
            Some(FunctionCall {
                id: block.get("id")?.as_str()?.to_owned(),
                name: name.to_owned(),
                arguments: block
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            })
        })
        .collect()
}

/// Serves `definitions` (the JSON of a `Vec<Function>`) as an MCP server on stdin/stdout until
/// stdin closes: what the gateway's executable does when started with [`SUBCOMMAND`].
pub fn serve_stdio(definitions: &str) -> io::Result<()> {
    let functions: Vec<Function> = serde_json::from_str(definitions)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(reply) = answer(&functions, &message) {
            writeln!(stdout, "{reply}")?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// The reply to one JSON-RPC message; `None` for notifications and for `tools/call`, which the
/// gateway ends the run on instead of answering.
fn answer(functions: &[Function], message: &Value) -> Option<Value> {
    let id = message.get("id")?.clone();
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    let result = match method {
        "initialize" => json!({
            "protocolVersion": message
                .pointer("/params/protocolVersion")
                .cloned()
                .unwrap_or_else(|| json!("2025-06-18")),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": SERVER, "version": env!("CARGO_PKG_VERSION")},
        }),
        "tools/list" => json!({
            "tools": functions.iter().map(|f| json!({
                "name": f.name,
                "description": f.description.clone().unwrap_or_default(),
                "inputSchema": f.parameters,
            })).collect::<Vec<_>>(),
        }),
        "ping" => json!({}),
        // The caller runs the function: the gateway ends the run when it sees the call.
        "tools/call" => return None,
        _ => {
            return Some(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32601, "message": format!("no method {method:?}")},
            }))
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Vec<Function> {
        vec![Function {
            name: "get_weather".into(),
            description: Some("Weather of a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}})
                .as_object()
                .cloned()
                .unwrap(),
        }]
    }

    #[test]
    fn lists_the_functions_and_never_answers_a_call() {
        let init = answer(
            &weather(),
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}}),
        )
        .unwrap();
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
        let list = answer(
            &weather(),
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .unwrap();
        assert_eq!(list["result"]["tools"][0]["name"], "get_weather");
        assert_eq!(
            list["result"]["tools"][0]["inputSchema"]["properties"]["city"]["type"],
            "string"
        );
        assert!(answer(
            &weather(),
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_weather"}}),
        )
        .is_none());
        assert!(answer(
            &weather(),
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )
        .is_none());
        let unknown = answer(
            &weather(),
            &json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list"}),
        )
        .unwrap();
        assert_eq!(unknown["error"]["code"], -32601);
    }

    #[test]
    fn finds_only_the_callers_functions_in_assistant_events() {
        let event = json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "toolu_1", "name": "mcp__caller__get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "ls"}},
        ]}});
        assert_eq!(
            calls_in(&event),
            [FunctionCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }]
        );
        assert!(calls_in(&json!({"type": "user", "message": {"content": []}})).is_empty());
    }
}
