//! `GET /v1/models` and `GET /v1/models/{id}`: the supported models in OpenAI's shape.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::openai::error::OpenAiError;
use crate::state::AppState;

fn model_object(id: &str, created: i64) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": "anthropic"})
}

/// Lists every supported model.
pub(crate) async fn list(State(state): State<AppState>) -> Json<Value> {
    let created = state.started_at;
    let data: Vec<Value> = state
        .config
        .supported_models
        .iter()
        .map(|id| model_object(id, created))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One supported model, or 404 for any other id.
pub(crate) async fn get(State(state): State<AppState>, Path(model_id): Path<String>) -> Response {
    if state.config.supported_models.contains(&model_id) {
        Json(model_object(&model_id, state.started_at)).into_response()
    } else {
        OpenAiError::not_found(format!("The model {model_id:?} does not exist"))
            .param("model")
            .code("model_not_found")
            .into_response()
    }
}
