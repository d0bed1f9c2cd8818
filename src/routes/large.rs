//! Large responses (a job record may hold megabytes of prompt, metadata, output and stderr):
//! streamed a field at a time, and bounded together by a byte budget
//! (`MAX_RESPONSE_BYTES_IN_FLIGHT`) whose share each response holds until its body is sent or
//! dropped. A client that stops reading is cut off by the server's write timeout, which drops the
//! body and so returns its share; until then the budget bounds what all such clients hold.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{header, HeaderValue};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::jobs::JobRecord;

/// The fields of a record that may be large, sent one chunk each after the rest.
const LARGE_FIELDS: [&str; 5] = ["prompt", "metadata", "output", "stderr", "result"];

/// What answering `record` may hold at once: the record, and one of its fields serialized.
pub(crate) fn record_cost(record: &JobRecord) -> usize {
    record.approx_bytes().saturating_mul(2)
}

/// `record` as a JSON body streamed a field at a time: first everything small, then each large
/// field, serialized only when the connection is ready for it. `share` is held until the body
/// is sent or dropped.
pub(crate) fn record_response(record: JobRecord, share: OwnedSemaphorePermit) -> Response {
    let stream = async_stream::stream! {
        let _share = share;
        let mut record = record;
        let large = LargeFields {
            prompt: std::mem::take(&mut record.prompt),
            metadata: record.metadata.take(),
            output: std::mem::take(&mut record.output),
            stderr: record.stderr.take(),
            result: record.result.take(),
        };
        // The rest is small: serialized through the record's own `Serialize`, so a field added
        // to the record is never left out here.
        let mut head = match serde_json::to_value(&record) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        drop(record);
        for name in LARGE_FIELDS {
            head.remove(name);
        }
        let mut first = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
        first.pop(); // the closing brace; the large fields follow
        let mut empty = head.is_empty();
        yield Ok::<_, Infallible>(Bytes::from(first));
        for name in LARGE_FIELDS {
            let chunk = large.field(name, empty);
            empty = false;
            yield Ok(Bytes::from(chunk));
        }
        yield Ok(Bytes::from_static(b"}"));
    };
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The large fields of a record, taken out of it.
struct LargeFields {
    prompt: String,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    output: Vec<String>,
    stderr: Option<String>,
    result: Option<String>,
}

impl LargeFields {
    /// `,"name":<json>` (no comma when it is the first member).
    fn field(&self, name: &str, first: bool) -> Vec<u8> {
        let value = match name {
            "prompt" => to_json(&self.prompt),
            "metadata" => to_json(&self.metadata),
            "output" => to_json(&self.output),
            "stderr" => to_json(&self.stderr),
            _ => to_json(&self.result),
        };
        let mut chunk = Vec::with_capacity(value.len() + name.len() + 4);
        if !first {
            chunk.push(b',');
        }
        chunk.push(b'"');
        chunk.extend_from_slice(name.as_bytes());
        chunk.extend_from_slice(b"\":");
        chunk.extend_from_slice(&value);
        chunk
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Strings, lists of strings and JSON maps always serialize.
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::ResponseBudget;
    use crate::jobs::NewJob;

    #[tokio::test]
    async fn a_streamed_record_is_the_record() {
        let mut metadata = serde_json::Map::new();
        metadata.insert("k".into(), serde_json::json!({"nested": [1, "two"]}));
        let mut record = JobRecord::queued(
            "0123456789abcdef0123456789abcdef".into(),
            NewJob {
                metadata: Some(metadata),
                ..NewJob::new("ci", "a \"quoted\"\nprompt", "general-purpose", 5.0, 60)
            },
            chrono::Utc::now(),
        );
        record.output = vec!["{\"type\":\"result\"}".into()];
        record.stderr = Some("warn".into());
        let budget = ResponseBudget::new(1 << 20);
        let share = budget.reserve(record_cost(&record)).await.unwrap();
        let body = record_response(record.clone(), share).into_body();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        let streamed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(streamed, serde_json::to_value(&record).unwrap());
        assert_eq!(budget.free(), 1 << 20, "share returned");
    }
}
