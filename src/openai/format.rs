//! The fields of an OpenAI run request that become the run's model and options: `model`, and
//! `response_format` and `reasoning_effort` as a JSON Schema for the CLI's `--json-schema` and its
//! `--effort`.

use serde_json::{json, Map, Value};

use crate::agent::{AgentOutcome, Effort, OptionError, RunOptions};
use crate::config::Config;

use super::error::OpenAiError;

/// The model a request asks for (`model`, else the default), if the gateway serves it.
pub(crate) fn model(asked: Option<String>, config: &Config) -> Result<String, OpenAiError> {
    let model = asked.unwrap_or_else(|| config.default_model.clone());
    if !config.supported_models.contains(&model) {
        return Err(OpenAiError::bad_request(format!(
            "unsupported model {model:?}; supported models: {}",
            config.supported_models.join(", ")
        ))
        .param("model")
        .code("model_not_found")
        .supported(&config.supported_models));
    }
    Ok(model)
}

/// Checks `options` against the models served and the operator's policy.
pub(crate) fn check_options(options: &RunOptions, config: &Config) -> Result<(), OpenAiError> {
    options
        .check(&config.supported_models, &config.option_policy)
        .map_err(|e| option_error(&e))
}

/// A request field as read: absent and `null` alike ask for nothing.
fn given(field: Option<&Value>) -> Option<&Value> {
    field.filter(|value| !value.is_null())
}

/// Reads `response_format` as the run's `json_schema`: `text` (or none) asks for nothing,
/// `json_object` for any JSON object, `json_schema` for its `schema` (any JSON value without
/// one). Says what is wrong otherwise.
pub(crate) fn response_format(
    format: Option<&Value>,
) -> Result<Option<Map<String, Value>>, OpenAiError> {
    let Some(format) = given(format) else {
        return Ok(None);
    };
    let bad = |message: String| {
        OpenAiError::bad_request(message)
            .param("response_format")
            .code("invalid_response_format")
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(object(json!({"type": "object"})))),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("response_format.json_schema must be an object".into()))?;
            if !spec.get("name").is_some_and(Value::is_string) {
                return Err(bad(
                    "response_format.json_schema.name must be a string".into()
                ));
            }
            let schema = match spec.get("schema") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(schema)) => schema.clone(),
                Some(_) => {
                    return Err(bad(
                        "response_format.json_schema.schema must be a JSON Schema object".into(),
                    ))
                }
            };
            Ok(Some(schema))
        }
        other => Err(bad(format!(
            "response_format type {} is not supported; use text, json_object or json_schema",
            other.map_or_else(|| "(missing)".to_owned(), |t| format!("{t:?}"))
        ))),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Reads `reasoning_effort` as the run's `effort`. OpenAI's `none` and `minimal` are the CLI's
/// `low`; the rest keep their names.
pub(crate) fn reasoning_effort(effort: Option<&Value>) -> Result<Option<Effort>, OpenAiError> {
    let Some(effort) = given(effort) else {
        return Ok(None);
    };
    let level = match effort.as_str() {
        Some("none" | "minimal") => Ok(Effort::Low),
        Some(name) => name.parse::<Effort>(),
        None => Err("must be a string".to_owned()),
    };
    level.map(Some).map_err(|why| {
        OpenAiError::bad_request(format!("reasoning_effort: {why}"))
            .param("reasoning_effort")
            .code("invalid_value")
    })
}

/// An option the operator's policy refused (403) or that is malformed (400), in OpenAI's shape.
/// `effort` is named by its chat name, `reasoning_effort`.
pub(crate) fn option_error(error: &OptionError) -> OpenAiError {
    let param = error.field_named("reasoning_effort", "response_format");
    if error.is_refusal() {
        return OpenAiError::new(
            http::StatusCode::FORBIDDEN,
            "permission_error",
            format!("{param}: {error}"),
        )
        .param(param)
        .code("option_not_allowed");
    }
    OpenAiError::bad_request(format!("{param}: {error}")).param(param)
}

/// The message content of a run asked for structured output: the value as JSON text. A run that
/// ended without one (the model never produced a value that fits) is an error, never prose.
pub(crate) fn structured_content(outcome: &AgentOutcome) -> Result<String, OpenAiError> {
    match &outcome.structured_output {
        Some(value) => Ok(value.to_string()),
        None => {
            let why = outcome
                .subtype
                .as_deref()
                .filter(|s| *s != "success")
                .map_or_else(
                    || "the agent answered without a structured value".to_owned(),
                    |subtype| format!("the agent gave up ({subtype})"),
                );
            Err(OpenAiError::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_response_error",
                format!("the agent could not produce output that fits response_format: {why}"),
            )
            .param("response_format")
            .code("structured_output_failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(format: Value) -> Result<Option<Map<String, Value>>, OpenAiError> {
        response_format(Some(&format))
    }

    #[test]
    fn formats_become_schemas() {
        assert_eq!(read(json!({"type": "text"})).unwrap(), None);
        assert_eq!(
            read(json!({"type": "json_object"})).unwrap(),
            Some(object(json!({"type": "object"})))
        );
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        assert_eq!(
            read(json!({"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": true}}))
                .unwrap(),
            Some(object(schema))
        );
    }

    #[test]
    fn bad_formats_are_400_naming_response_format() {
        for format in [
            json!({"type": "xml"}),
            json!({}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {}}}),
            json!({"type": "json_schema", "json_schema": {"name": "n", "schema": []}}),
        ] {
            let err = read(format.clone()).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{format}");
            assert_eq!(
                serde_json::to_value(err.body()).unwrap()["error"]["param"],
                "response_format"
            );
        }
    }

    #[test]
    fn reasoning_effort_maps_to_effort() {
        let effort = reasoning_effort(Some(&json!("minimal"))).unwrap();
        assert_eq!(effort, Some(Effort::Low));
        let effort = reasoning_effort(Some(&json!("high"))).unwrap();
        assert_eq!(effort, Some(Effort::High));
        assert!(reasoning_effort(Some(&json!("hard"))).is_err());
    }

    #[test]
    fn a_run_without_a_structured_value_is_an_error() {
        let outcome = AgentOutcome {
            subtype: Some("error_max_structured_output_retries".into()),
            is_error: true,
            ..AgentOutcome::default()
        };
        let err = structured_content(&outcome).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            serde_json::to_value(err.body()).unwrap()["error"]["code"],
            "structured_output_failed"
        );
        let outcome = AgentOutcome {
            structured_output: Some(json!({"n": 1})),
            ..AgentOutcome::default()
        };
        assert_eq!(structured_content(&outcome).unwrap(), r#"{"n":1}"#);
    }
}
