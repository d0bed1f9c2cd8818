//! What a caller may ask of one run beyond its prompt: model, prompts, tools, turns, effort, MCP
//! servers, inline agents and a JSON Schema for structured output; how each is checked, which ones
//! the operator's policy refuses, and how they reach the CLI's argv.
//!
//! Every value reaches argv glued to its flag (`--model=VALUE`), so a value starting with `-` is
//! never read as a flag of its own: the CLI reads `--flag=value` as that flag's value whatever
//! follows the `=`. JSON values (MCP servers, agents, schema) are passed inline the same way,
//! so nothing a caller sends is written to any file.

use std::ffi::OsString;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::command::check_agent_name;

/// Longest text option (`system_prompt`, `append_system_prompt`) and longest JSON option once
/// serialized: well under the kernel's 128 KiB limit on one argument.
pub(crate) const MAX_OPTION_BYTES: usize = 64 * 1024;
/// Most tool names in one list.
pub(crate) const MAX_TOOLS: usize = 100;
/// Longest tool name or pattern (`Bash(git log:*)`).
pub(crate) const MAX_TOOL_NAME_LEN: usize = 256;

/// How hard the model thinks (`--effort`), in increasing order of tokens spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effort {
    /// Fewest tokens.
    Low,
    /// The middle.
    Medium,
    /// More thinking.
    High,
    /// More still.
    Xhigh,
    /// The most the CLI offers.
    Max,
}

impl Effort {
    /// The CLI's name of the level.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Xhigh => "xhigh",
            Self::Max => "max",
        }
    }
}

/// Checks that `dollars`, named `name` in the message, is a budget the CLI's `--max-budget-usd`
/// can take: a finite amount above zero.
pub fn check_budget(name: &str, dollars: f64) -> Result<(), String> {
    if dollars.is_finite() && dollars > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a positive number of dollars, got {dollars}"
        ))
    }
}

impl fmt::Display for Effort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Effort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.to_owned()))
            .map_err(|_| format!("expected low, medium, high, xhigh or max, got {s:?}"))
    }
}

/// The options of one run, as the caller gave them (all optional). Kept on the job record as
/// the options the run used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunOptions {
    /// `--model`; one of `SUPPORTED_MODELS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `--fallback-model`; one of `SUPPORTED_MODELS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
    /// `--system-prompt`: replaces the default system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// `--append-system-prompt`: added to the end of the default system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    /// `--tools`: the built-in tools offered; empty for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// `--allowedTools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// `--disallowedTools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    /// `--max-turns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// `--effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    /// MCP servers by name, passed as `--mcp-config={"mcpServers": …}` with `--strict-mcp-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Map<String, Value>>,
    /// Agent definitions by name (`--agents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Map<String, Value>>,
    /// A JSON Schema the final answer must fit (`--json-schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Map<String, Value>>,
}

/// The operator's policy over [`RunOptions`]: which widening options are allowed, and caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionPolicy {
    /// `mcp_servers` allowed (`ALLOW_MCP_SERVERS`).
    pub allow_mcp_servers: bool,
    /// `system_prompt` allowed (`ALLOW_SYSTEM_PROMPT`).
    pub allow_system_prompt: bool,
    /// `agents` allowed (`ALLOW_INLINE_AGENTS`).
    pub allow_inline_agents: bool,
    /// `tools` and `allowed_tools` allowed (`ALLOW_TOOLS`).
    pub allow_tools: bool,
    /// Largest `max_turns` (`MAX_TURNS`).
    pub max_turns: u32,
    /// Highest `effort` (`MAX_EFFORT`).
    pub max_effort: Effort,
}

impl OptionPolicy {
    /// Allows everything, with no cap: for embedders that trust their callers, and tests.
    pub const PERMISSIVE: Self = Self {
        allow_mcp_servers: true,
        allow_system_prompt: true,
        allow_inline_agents: true,
        allow_tools: true,
        max_turns: u32::MAX,
        max_effort: Effort::Max,
    };
}

/// Why options were not accepted: malformed (422) or refused by the operator's policy (403).
/// Each names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// The field's value is not usable.
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The operator's policy turns the field off or caps it below the value.
    Refused {
        /// The request field.
        field: &'static str,
        /// Which setting refuses it and how.
        why: String,
    },
}

impl OptionError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Invalid { field, .. } | Self::Refused { field, .. } => field,
        }
    }

    /// The request field at fault as an API names it: the API's own fields for the effort and
    /// the JSON Schema of structured output, the shared name for the rest.
    pub fn field_named(&self, effort: &'static str, json_schema: &'static str) -> &'static str {
        match self.field() {
            "effort" => effort,
            "json_schema" => json_schema,
            other => other,
        }
    }

    /// Whether the operator's policy refused it (403), as opposed to it being malformed (422).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { field, why } => write!(f, "{field}: {why}"),
            Self::Refused { field, why } => write!(f, "{field} is not allowed: {why}"),
        }
    }
}

impl std::error::Error for OptionError {}

fn invalid(field: &'static str, why: impl Into<String>) -> OptionError {
    OptionError::Invalid {
        field,
        why: why.into(),
    }
}

/// The option fields of a request body, each kept as raw JSON so a wrong type is reported with
/// its field's name; every other field of the body is skipped without being copied.
#[derive(Debug, Default, Deserialize)]
struct OptionFields {
    model: Option<Value>,
    fallback_model: Option<Value>,
    system_prompt: Option<Value>,
    append_system_prompt: Option<Value>,
    tools: Option<Value>,
    allowed_tools: Option<Value>,
    disallowed_tools: Option<Value>,
    max_turns: Option<Value>,
    effort: Option<Value>,
    mcp_servers: Option<Value>,
    agents: Option<Value>,
    json_schema: Option<Value>,
}

/// One field's raw JSON as its type; `null` counts as absent.
fn field<T: serde::de::DeserializeOwned>(
    name: &'static str,
    value: Option<Value>,
) -> Result<Option<T>, OptionError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| invalid(name, e.to_string())),
    }
}

impl RunOptions {
    /// Reads the option fields of a JSON request body (other fields are ignored), naming the
    /// field whose value has the wrong type. Values are checked by [`RunOptions::check`].
    pub fn from_body(body: &[u8]) -> Result<Self, OptionError> {
        let raw: OptionFields =
            serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))?;
        // Each field read from its raw value under its own name.
        macro_rules! read {
            ($($name:ident),*) => {
                Ok(Self { $($name: field(stringify!($name), raw.$name)?,)* })
            };
        }
        read!(
            model,
            fallback_model,
            system_prompt,
            append_system_prompt,
            tools,
            allowed_tools,
            disallowed_tools,
            max_turns,
            effort,
            mcp_servers,
            agents,
            json_schema
        )
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks every option's value (422 when wrong) and then the operator's policy (403).
    /// `models` is `SUPPORTED_MODELS`.
    pub fn check(&self, models: &[String], policy: &OptionPolicy) -> Result<(), OptionError> {
        self.check_values(models)?;
        self.check_policy(policy)
    }

    fn check_values(&self, models: &[String]) -> Result<(), OptionError> {
        for (field, model) in [
            ("model", &self.model),
            ("fallback_model", &self.fallback_model),
        ] {
            if let Some(model) = model {
                if !models.contains(model) {
                    return Err(invalid(
                        field,
                        format!(
                            "model {model:?} is not supported; supported: {}",
                            models.join(", ")
                        ),
                    ));
                }
            }
        }
        for (field, text) in [
            ("system_prompt", &self.system_prompt),
            ("append_system_prompt", &self.append_system_prompt),
        ] {
            if let Some(text) = text {
                check_text(field, text)?;
            }
        }
        for (field, tools) in [
            ("tools", &self.tools),
            ("allowed_tools", &self.allowed_tools),
            ("disallowed_tools", &self.disallowed_tools),
        ] {
            if let Some(tools) = tools {
                check_tools(field, tools)?;
            }
        }
        if self.max_turns == Some(0) {
            return Err(invalid("max_turns", "must be at least 1"));
        }
        if let Some(servers) = &self.mcp_servers {
            check_json("mcp_servers", servers)?;
            for (name, server) in servers {
                check_entry_name("mcp_servers", name)?;
                if !server.is_object() {
                    return Err(invalid(
                        "mcp_servers",
                        format!("server {name:?} must be an object"),
                    ));
                }
            }
        }
        if let Some(agents) = &self.agents {
            check_json("agents", agents)?;
            for (name, agent) in agents {
                check_agent_name(name)
                    .map_err(|why| invalid("agents", format!("agent {name:?}: {why}")))?;
                let has = |key: &str| agent.get(key).is_some_and(Value::is_string);
                if !(has("description") && has("prompt")) {
                    return Err(invalid(
                        "agents",
                        format!("agent {name:?} must be an object with string `description` and `prompt`"),
                    ));
                }
            }
        }
        if let Some(schema) = &self.json_schema {
            check_json("json_schema", schema)?;
        }
        Ok(())
    }

    fn check_policy(&self, policy: &OptionPolicy) -> Result<(), OptionError> {
        let refuse = |field: &'static str, setting: &str| OptionError::Refused {
            field,
            why: format!("the operator turned it off ({setting}=false)"),
        };
        if self.mcp_servers.is_some() && !policy.allow_mcp_servers {
            return Err(refuse("mcp_servers", "ALLOW_MCP_SERVERS"));
        }
        if self.system_prompt.is_some() && !policy.allow_system_prompt {
            return Err(refuse("system_prompt", "ALLOW_SYSTEM_PROMPT"));
        }
        if self.agents.is_some() && !policy.allow_inline_agents {
            return Err(refuse("agents", "ALLOW_INLINE_AGENTS"));
        }
        if self.tools.is_some() && !policy.allow_tools {
            return Err(refuse("tools", "ALLOW_TOOLS"));
        }
        if self.allowed_tools.is_some() && !policy.allow_tools {
            return Err(refuse("allowed_tools", "ALLOW_TOOLS"));
        }
        fn over_cap(
            field: &'static str,
            setting: &str,
            value: impl fmt::Display,
            cap: impl fmt::Display,
        ) -> OptionError {
            let why = format!("{value} is over the operator's cap of {cap} ({setting})");
            OptionError::Refused { field, why }
        }
        if let Some(turns) = self.max_turns.filter(|t| *t > policy.max_turns) {
            return Err(over_cap("max_turns", "MAX_TURNS", turns, policy.max_turns));
        }
        if let Some(effort) = self.effort.filter(|e| *e > policy.max_effort) {
            return Err(over_cap("effort", "MAX_EFFORT", effort, policy.max_effort));
        }
        Ok(())
    }

    /// The CLI arguments for these options, each value glued to its flag. `--model` is left to
    /// the caller of this function, which knows whether the request named one itself.
    pub(crate) fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: &str| args.push(format!("{name}={value}").into());
        if let Some(model) = &self.fallback_model {
            flag("--fallback-model", model);
        }
        if let Some(text) = &self.system_prompt {
            flag("--system-prompt", text);
        }
        if let Some(text) = &self.append_system_prompt {
            flag("--append-system-prompt", text);
        }
        if let Some(tools) = &self.tools {
            flag("--tools", &tools.join(","));
        }
        if let Some(tools) = &self.allowed_tools {
            flag("--allowedTools", &tools.join(","));
        }
        if let Some(tools) = &self.disallowed_tools {
            flag("--disallowedTools", &tools.join(","));
        }
        if let Some(turns) = self.max_turns {
            flag("--max-turns", &turns.to_string());
        }
        if let Some(effort) = self.effort {
            flag("--effort", effort.as_str());
        }
        if let Some(agents) = &self.agents {
            flag("--agents", &Value::Object(agents.clone()).to_string());
        }
        if let Some(schema) = &self.json_schema {
            flag("--json-schema", &Value::Object(schema.clone()).to_string());
        }
        // Last: `flag` borrows `args` until its final use.
        if let Some(servers) = &self.mcp_servers {
            let config = serde_json::json!({ "mcpServers": servers });
            flag("--mcp-config", &config.to_string());
            args.push("--strict-mcp-config".into());
        }
        args
    }

    /// Roughly the bytes these options hold, for the job store's budget.
    pub fn approx_bytes(&self) -> usize {
        serde_json::to_vec(self).map_or(0, |v| v.len())
    }
}

/// A text that goes to argv whole: no NUL (argv cannot carry one), at most [`MAX_OPTION_BYTES`].
fn check_text(field: &'static str, text: &str) -> Result<(), OptionError> {
    if text.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    if text.len() > MAX_OPTION_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_OPTION_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A JSON option, serialized, within [`MAX_OPTION_BYTES`] (serde_json escapes any NUL).
fn check_json(field: &'static str, value: &Map<String, Value>) -> Result<(), OptionError> {
    let len = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if len > MAX_OPTION_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_OPTION_BYTES} bytes as JSON"),
        ));
    }
    Ok(())
}

/// An MCP server's name: a plain name, as agent names are.
fn check_entry_name(field: &'static str, name: &str) -> Result<(), OptionError> {
    check_agent_name(name).map_err(|why| {
        invalid(
            field,
            format!("name {name:?}: {}", why.replace("agent name", "name")),
        )
    })
}

/// A tool list: at most [`MAX_TOOLS`] names, each a tool name or pattern (`Bash(git log:*)`,
/// `mcp__server__tool`) that does not start with `-` and holds no `,` (the CLI's separator),
/// quote or control character.
fn check_tools(field: &'static str, tools: &[String]) -> Result<(), OptionError> {
    if tools.len() > MAX_TOOLS {
        return Err(invalid(field, format!("at most {MAX_TOOLS} tools")));
    }
    for tool in tools {
        let plain = !tool.is_empty()
            && tool.len() <= MAX_TOOL_NAME_LEN
            && !tool.starts_with('-')
            && !tool.starts_with(' ')
            && tool.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        '_' | '-' | '.' | ':' | '*' | '(' | ')' | '/' | ' ' | '@' | '~'
                    )
            });
        if !plain {
            return Err(invalid(
                field,
                format!("{tool:?} is not a tool name: letters, digits and _-.:*()/ @~ only, not starting with '-' or a space, at most {MAX_TOOL_NAME_LEN} characters"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<String> {
        vec!["sonnet".into(), "haiku".into()]
    }

    fn options(json: Value) -> RunOptions {
        serde_json::from_value(json).unwrap()
    }

    use crate::agent::command::argv_tests::strings;

    #[test]
    fn every_value_is_glued_to_its_flag() {
        let o = options(serde_json::json!({
            "model": "sonnet", "fallback_model": "haiku",
            "system_prompt": "-be terse", "append_system_prompt": "--help",
            "tools": ["Bash", "Read"], "allowed_tools": ["Bash(git log:*)"],
            "disallowed_tools": ["WebFetch"], "max_turns": 3, "effort": "low",
            "mcp_servers": {"s": {"command": "x"}},
            "agents": {"rev": {"description": "d", "prompt": "p"}},
            "json_schema": {"type": "object"},
        }));
        o.check(&models(), &OptionPolicy::PERMISSIVE).unwrap();
        assert_eq!(
            strings(o.args()),
            [
                "--fallback-model=haiku",
                "--system-prompt=-be terse",
                "--append-system-prompt=--help",
                "--tools=Bash,Read",
                "--allowedTools=Bash(git log:*)",
                "--disallowedTools=WebFetch",
                "--max-turns=3",
                "--effort=low",
                r#"--agents={"rev":{"description":"d","prompt":"p"}}"#,
                r#"--json-schema={"type":"object"}"#,
                r#"--mcp-config={"mcpServers":{"s":{"command":"x"}}}"#,
                "--strict-mcp-config",
            ]
        );
        assert!(RunOptions::default().args().is_empty());
    }

    #[test]
    fn malformed_values_are_invalid_and_name_their_field() {
        for (json, field) in [
            (serde_json::json!({"model": "gpt-4"}), "model"),
            (serde_json::json!({"model": "--help"}), "model"),
            (
                serde_json::json!({"fallback_model": "-x"}),
                "fallback_model",
            ),
            (
                serde_json::json!({"system_prompt": "a\u{0}b"}),
                "system_prompt",
            ),
            (
                serde_json::json!({"append_system_prompt": "x".repeat(MAX_OPTION_BYTES + 1)}),
                "append_system_prompt",
            ),
            (serde_json::json!({"tools": ["--dangerous"]}), "tools"),
            (
                serde_json::json!({"allowed_tools": ["a,b"]}),
                "allowed_tools",
            ),
            (
                serde_json::json!({"disallowed_tools": [""]}),
                "disallowed_tools",
            ),
            (serde_json::json!({"max_turns": 0}), "max_turns"),
            (
                serde_json::json!({"mcp_servers": {"-s": {}}}),
                "mcp_servers",
            ),
            (serde_json::json!({"mcp_servers": {"s": 1}}), "mcp_servers"),
            (
                serde_json::json!({"agents": {"a": {"prompt": "p"}}}),
                "agents",
            ),
            (
                serde_json::json!({"agents": {"../a": {"description": "d", "prompt": "p"}}}),
                "agents",
            ),
        ] {
            let err = options(json.clone())
                .check(&models(), &OptionPolicy::PERMISSIVE)
                .unwrap_err();
            assert_eq!(err.field(), field, "{json}");
            assert!(!err.is_refusal(), "{json}");
        }
    }

    #[test]
    fn wrong_types_are_invalid_and_name_their_field() {
        for (json, name) in [
            (serde_json::json!({"max_turns": -1}), "max_turns"),
            (serde_json::json!({"max_turns": "3"}), "max_turns"),
            (serde_json::json!({"effort": "extreme"}), "effort"),
            (serde_json::json!({"tools": "Bash"}), "tools"),
            (serde_json::json!({"json_schema": "object"}), "json_schema"),
            (serde_json::json!({"agents": []}), "agents"),
            (serde_json::json!({"model": 4}), "model"),
        ] {
            let err = RunOptions::from_body(json.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.field(), name, "{json}");
            assert!(err.to_string().starts_with(name), "{err}");
        }
        let read =
            RunOptions::from_body(br#"{"prompt":"p","model":null,"effort":"high"}"#).unwrap();
        assert_eq!(read.effort, Some(Effort::High));
        assert_eq!(read.model, None);
    }

    #[test]
    fn the_policy_refuses_widening_options_and_caps() {
        let closed = OptionPolicy {
            allow_mcp_servers: false,
            allow_system_prompt: false,
            allow_inline_agents: false,
            allow_tools: false,
            max_turns: 10,
            max_effort: Effort::High,
        };
        for (json, field) in [
            (
                serde_json::json!({"mcp_servers": {"s": {"command": "x"}}}),
                "mcp_servers",
            ),
            (serde_json::json!({"system_prompt": "p"}), "system_prompt"),
            (
                serde_json::json!({"agents": {"a": {"description": "d", "prompt": "p"}}}),
                "agents",
            ),
            (serde_json::json!({"tools": ["Bash"]}), "tools"),
            (
                serde_json::json!({"allowed_tools": ["Bash"]}),
                "allowed_tools",
            ),
            (serde_json::json!({"max_turns": 11}), "max_turns"),
            (serde_json::json!({"effort": "max"}), "effort"),
        ] {
            let err = options(json.clone()).check(&models(), &closed).unwrap_err();
            assert_eq!(err.field(), field, "{json}");
            assert!(err.is_refusal(), "{json}");
        }
        // Narrowing options stay open.
        options(serde_json::json!({
            "append_system_prompt": "p", "disallowed_tools": ["Bash"], "max_turns": 10,
            "effort": "high", "json_schema": {"type": "object"}, "model": "haiku",
        }))
        .check(&models(), &closed)
        .unwrap();
    }
}
