//! OpenAI function calling, read from a request: `tools` (function definitions, in chat's nested
//! shape or the Responses API's flat one), `tool_choice` and `parallel_tool_calls`, checked and
//! turned into the functions a run offers its agent (see [`crate::agent::functions`]).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::agent::functions::SERVER;
use crate::agent::{Function, FunctionCall};

use super::error::OpenAiError;

/// Most functions one request may offer (OpenAI's own limit).
pub(crate) const MAX_FUNCTIONS: usize = 128;
/// Most bytes of function definitions, serialized: they reach the MCP server on its command line,
/// well under the kernel's limit on one argument.
pub(crate) const MAX_DEFINITION_BYTES: usize = 64 * 1024;
/// Longest function name (OpenAI's limit).
const MAX_NAME_LEN: usize = 64;

/// Which shape the request's tools come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Chat completions: `{"type": "function", "function": {"name", …}}`.
    Chat,
    /// Responses: `{"type": "function", "name", …}`.
    Responses,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The agent decides (the default).
    Auto,
    /// No function is offered.
    None,
    /// The agent is told it must call one; not enforced (see the README).
    Required,
    /// Only this function is offered, and the agent is told to call it.
    Named(String),
}

/// The function-calling fields of an OpenAI run request: the same three in chat completions and in
/// the Responses API, where only the shape of a definition differs (see [`Api`]).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct FunctionFields {
    /// Function definitions the agent may call: in chat `{"type": "function", "function": {…}}`,
    /// in the Responses API `{"type": "function", "name", "parameters", …}`; the answer then
    /// carries the calls.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) tools: Option<Value>,
    /// `auto`, `none`, `required` or one function by name (in chat
    /// `{"type": "function", "function": {"name": …}}`, in the Responses API
    /// `{"type": "function", "name": …}`).
    #[schema(value_type = Option<Object>)]
    pub(crate) tool_choice: Option<Value>,
    /// `false` answers only the first of several calls made at once.
    #[schema(value_type = Option<bool>)]
    pub(crate) parallel_tool_calls: Option<Value>,
}

/// What a request asks of function calling.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// The functions defined, in order.
    pub(crate) functions: Vec<Function>,
    /// `tool_choice`.
    pub(crate) choice: Choice,
    /// `parallel_tool_calls` (default true): false answers only the first call.
    pub(crate) parallel: bool,
    /// The functions as a Responses object echoes them (`type`, `name`, `description`,
    /// `parameters`, `strict`: OpenAI's normalized form).
    pub(crate) echo: Value,
    /// The request's `tool_choice` as sent (or `"auto"`), echoed by a Responses object.
    pub(crate) choice_echo: Value,
}

impl Tools {
    /// Reads and checks `tools`, `tool_choice` and `parallel_tool_calls`, naming the field at
    /// fault in a 400.
    pub(crate) fn read(api: Api, fields: &FunctionFields) -> Result<Self, OpenAiError> {
        let mut echo = Vec::new();
        let functions = match &fields.tools {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > MAX_FUNCTIONS {
                    return Err(bad(
                        "tools".into(),
                        format!("at most {MAX_FUNCTIONS} tools may be given"),
                    ));
                }
                let mut functions: Vec<Function> = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let (function, strict) = function(api, index, item)?;
                    if functions.iter().any(|f| f.name == function.name) {
                        return Err(bad(
                            name_field(api, index),
                            format!("the function name {:?} is given twice", function.name),
                        ));
                    }
                    echo.push(json!({
                        "type": "function",
                        "name": function.name,
                        "description": function.description,
                        "parameters": function.parameters,
                        "strict": strict,
                    }));
                    functions.push(function);
                }
                let size = serde_json::to_string(&functions).map_or(usize::MAX, |s| s.len());
                if size > MAX_DEFINITION_BYTES {
                    return Err(bad(
                        "tools".into(),
                        format!(
                            "the function definitions take {size} bytes; at most {MAX_DEFINITION_BYTES} are accepted"
                        ),
                    ));
                }
                functions
            }
            Some(_) => return Err(bad("tools".into(), "tools must be an array".into())),
        };
        let choice_value = fields.tool_choice.as_ref().filter(|c| !c.is_null());
        let choice = match choice_value {
            None => Choice::Auto,
            Some(value) => read_choice(api, value, &functions)?,
        };
        let parallel = match &fields.parallel_tool_calls {
            None | Some(Value::Null) => true,
            Some(Value::Bool(parallel)) => *parallel,
            Some(_) => {
                return Err(bad(
                    "parallel_tool_calls".into(),
                    "parallel_tool_calls must be a boolean".into(),
                ))
            }
        };
        Ok(Self {
            echo: Value::Array(echo),
            choice_echo: choice_value.cloned().unwrap_or(json!("auto")),
            functions,
            choice,
            parallel,
        })
    }

    /// The functions the agent is offered: none under `tool_choice: "none"`, only the named one
    /// under a named choice, all of them otherwise.
    pub(crate) fn offered(&self) -> Vec<Function> {
        match &self.choice {
            Choice::None => Vec::new(),
            Choice::Named(name) => self
                .functions
                .iter()
                .filter(|f| &f.name == name)
                .cloned()
                .collect(),
            Choice::Auto | Choice::Required => self.functions.clone(),
        }
    }

    /// What the agent is told about the functions, for the prompt's system section; `None`
    /// when none is offered.
    pub(crate) fn instructions(&self) -> Option<String> {
        let offered = self.offered();
        if offered.is_empty() {
            return None;
        }
        let names: Vec<String> = offered
            .iter()
            .map(|f| format!("mcp__{SERVER}__{}", f.name))
            .collect();
        let mut text = format!(
            "The caller's functions are the tools {}. Calling one ends your turn: the caller runs it and its result comes back in the conversation.",
            names.join(", ")
        );
        match &self.choice {
            Choice::Required => {
                text.push_str(" You must call at least one of them before you answer.");
            }
            Choice::Named(name) => {
                text.push_str(&format!(" You must call mcp__{SERVER}__{name} now."));
            }
            Choice::Auto | Choice::None => {}
        }
        Some(text)
    }

    /// The calls to answer: all of them, or only the first without `parallel_tool_calls`.
    pub(crate) fn answered<'a>(&self, calls: &'a [FunctionCall]) -> &'a [FunctionCall] {
        if self.parallel {
            calls
        } else {
            &calls[..calls.len().min(1)]
        }
    }
}

/// The id a call is answered under: OpenAI's `call_…` form of the model's id.
pub(crate) fn call_id(call: &FunctionCall) -> String {
    format!(
        "call_{}",
        call.id.strip_prefix("toolu_").unwrap_or(&call.id)
    )
}

fn bad(param: String, message: String) -> OpenAiError {
    OpenAiError::bad_request(message)
        .param(param)
        .code("invalid_tools")
}

fn name_field(api: Api, index: usize) -> String {
    match api {
        Api::Chat => format!("tools[{index}].function.name"),
        Api::Responses => format!("tools[{index}].name"),
    }
}

/// One entry of `tools`, which must define a function; with its `strict` (accepted, not
/// enforced: the agent's arguments are not checked against the schema).
fn function(api: Api, index: usize, item: &Value) -> Result<(Function, Option<bool>), OpenAiError> {
    let kind = item.get("type").and_then(Value::as_str);
    if kind != Some("function") {
        return Err(bad(
            format!("tools[{index}].type"),
            format!(
                "tools[{index}].type must be \"function\", got {}: only function tools are supported (the agent brings its own tools)",
                item.get("type").map_or_else(|| "nothing".to_owned(), Value::to_string)
            ),
        ));
    }
    let (definition, prefix) = match api {
        Api::Chat => (
            item.get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    bad(
                        format!("tools[{index}].function"),
                        format!("tools[{index}].function must be an object"),
                    )
                })?,
            format!("tools[{index}].function"),
        ),
        Api::Responses => (
            item.as_object().ok_or_else(|| {
                bad(
                    format!("tools[{index}]"),
                    format!("tools[{index}] must be an object"),
                )
            })?,
            format!("tools[{index}]"),
        ),
    };
    let name = definition
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                format!("{prefix}.name"),
                format!("{prefix}.name must be a string"),
            )
        })?;
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(
            format!("{prefix}.name"),
            format!(
                "{prefix}.name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'"
            ),
        ));
    }
    let description = match definition.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            return Err(bad(
                format!("{prefix}.description"),
                format!("{prefix}.description must be a string"),
            ))
        }
    };
    let parameters = parameters(&prefix, definition.get("parameters"))?;
    let strict = match definition.get("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(strict)) => Some(*strict),
        Some(_) => {
            return Err(bad(
                format!("{prefix}.strict"),
                format!("{prefix}.strict must be a boolean"),
            ))
        }
    };
    Ok((
        Function {
            name: name.to_owned(),
            description,
            parameters,
        },
        strict,
    ))
}

/// `parameters`: a JSON Schema of an object (none means no arguments).
fn parameters(prefix: &str, value: Option<&Value>) -> Result<Map<String, Value>, OpenAiError> {
    let field = format!("{prefix}.parameters");
    let mut schema = match value {
        None | Some(Value::Null) => return Ok(empty_object_schema()),
        Some(Value::Object(schema)) => schema.clone(),
        Some(_) => {
            return Err(bad(
                field.clone(),
                format!("{field} must be a JSON Schema object"),
            ))
        }
    };
    match schema.get("type") {
        None => {
            // The agent's tools take objects: a schema without a type describes one.
            schema.insert("type".into(), json!("object"));
        }
        Some(Value::String(kind)) if kind == "object" => {}
        Some(other) => {
            return Err(bad(
                field.clone(),
                format!("{field} must describe an object (\"type\": \"object\"), got type {other}"),
            ))
        }
    }
    let as_value = Value::Object(schema);
    if let Err(error) = jsonschema::meta::validate(&as_value) {
        return Err(bad(
            field.clone(),
            format!("{field} is not a valid JSON Schema: {error}"),
        ));
    }
    match as_value {
        Value::Object(schema) => Ok(schema),
        _ => Ok(empty_object_schema()),
    }
}

fn empty_object_schema() -> Map<String, Value> {
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), json!({}));
    schema
}

/// `tool_choice`: `auto`, `none`, `required`, or one function by name.
fn read_choice(api: Api, value: &Value, functions: &[Function]) -> Result<Choice, OpenAiError> {
    let bad_choice = |message: String| bad("tool_choice".into(), message);
    let choice = match value {
        Value::String(mode) => match mode.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => {
                return Err(bad_choice(format!(
                    "tool_choice {other:?} is not one of auto, none, required, or a function"
                )))
            }
        },
        Value::Object(object) if object.get("type").and_then(Value::as_str) == Some("function") => {
            let name = match api {
                Api::Chat => object.get("function").and_then(|f| f.get("name")),
                Api::Responses => object.get("name"),
            }
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad_choice(match api {
                    Api::Chat => "tool_choice.function.name must be a string".into(),
                    Api::Responses => "tool_choice.name must be a string".into(),
                })
            })?;
            if !functions.iter().any(|f| f.name == name) {
                return Err(bad_choice(format!(
                    "tool_choice names the function {name:?}, which tools does not define"
                )));
            }
            Choice::Named(name.to_owned())
        }
        _ => {
            return Err(bad_choice(
                "tool_choice must be auto, none, required, or {\"type\": \"function\", …} naming a function of tools".into(),
            ))
        }
    };
    if matches!(choice, Choice::Required) && functions.is_empty() {
        return Err(bad_choice(
            "tool_choice \"required\" needs functions in tools".into(),
        ));
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_tools(tools: Value, choice: Option<Value>) -> Result<Tools, OpenAiError> {
        let fields = FunctionFields {
            tools: Some(tools),
            tool_choice: choice,
            parallel_tool_calls: None,
        };
        Tools::read(Api::Chat, &fields)
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn reads_chat_and_responses_shapes() {
        let tools = chat_tools(weather(), None).unwrap();
        assert_eq!(tools.functions[0].name, "get_weather");
        assert_eq!(tools.choice, Choice::Auto);
        let fields = FunctionFields {
            tools: Some(json!([{"type": "function", "name": "f"}])),
            tool_choice: Some(json!({"type": "function", "name": "f"})),
            parallel_tool_calls: Some(json!(false)),
        };
        let flat = Tools::read(Api::Responses, &fields).unwrap();
        assert_eq!(flat.choice, Choice::Named("f".into()));
        assert_eq!(flat.functions[0].parameters["type"], "object");
        assert!(!flat.parallel);
    }

    #[test]
    fn choice_decides_what_is_offered() {
        let none = chat_tools(weather(), Some(json!("none"))).unwrap();
        assert!(none.offered().is_empty());
        assert!(none.instructions().is_none());
        let required = chat_tools(weather(), Some(json!("required"))).unwrap();
        assert_eq!(required.offered().len(), 1);
        assert!(required.instructions().unwrap().contains("must call"));
    }

    #[test]
    fn bad_tools_name_their_field() {
        for (tools, choice, param) in [
            (json!({}), None, "tools"),
            (json!([{"type": "web_search"}]), None, "tools[0].type"),
            (json!([{"type": "function"}]), None, "tools[0].function"),
            (
                json!([{"type": "function", "function": {"name": "bad name"}}]),
                None,
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {"type": "nope"}}}}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]),
                None,
                "tools[1].function.name",
            ),
            (weather(), Some(json!("sometimes")), "tool_choice"),
            (
                weather(),
                Some(json!({"type": "function", "function": {"name": "other"}})),
                "tool_choice",
            ),
            (json!([]), Some(json!("required")), "tool_choice"),
        ] {
            let error = chat_tools(tools.clone(), choice).unwrap_err();
            assert_eq!(
                error.param_str(),
                Some(param),
                "{tools}: {}",
                error.message()
            );
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
        }
    }
}
