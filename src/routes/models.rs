//! `GET /v1/models` and `GET /v1/models/{id}`: the supported models in OpenAI's shape.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::openai::error::{ErrorBody, OpenAiError};
use crate::openai::wire::{Model, ModelList};
use crate::routes::openapi::OpenAiAuthFailure;
use crate::state::AppState;

fn model_object(id: &str, created: i64) -> Model {
    Model {
        id: id.to_owned(),
        object: "model",
        created,
        owned_by: "anthropic",
    }
}

/// Lists every supported model.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "listModels",
    summary = "List the supported models",
    description = "`SUPPORTED_MODELS`, in OpenAI's shape.",
    tag = "openai",
    security(("bearer" = [])),
    responses((status = 200, description = "The supported models", body = ModelList), OpenAiAuthFailure)
)]
pub(crate) async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let created = state.started_at;
    let data = state
        .config
        .supported_models
        .iter()
        .map(|id| model_object(id, created))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

/// One supported model, or 404 for any other id.
#[utoipa::path(
    get,
    path = "/v1/models/{model_id}",
    operation_id = "retrieveModel",
    summary = "Read a supported model",
    description = "One of `SUPPORTED_MODELS`, in OpenAI's shape; 404 for any other id.",
    tag = "openai",
    security(("bearer" = [])),
    params(("model_id" = String, Path, description = "A model id")),
    responses(
        (status = 200, description = "The model", body = Model),
        (status = 404, description = "No such model (`model_not_found`)", body = ErrorBody),
        OpenAiAuthFailure
    )
)]
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
