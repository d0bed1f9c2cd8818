//! Reading the CLI's output: stdout split into stream-json events within a byte cap, stderr kept up
//! to its cap, the final `result` event, and the error messages the CLI prints on stderr.

use super::outcome::{AgentOutcome, Usage};
use serde_json::Value;

/// How many characters of unparseable output an error message quotes.
pub(crate) const SAMPLE_CHARS: usize = 200;

/// One stdout line, classified.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// A stream-json event: a JSON object.
    Event(Value),
    /// An empty (or blank) line, which carries nothing.
    Blank,
    /// Anything else; stream-json never prints it, so it is kept for the error message.
    NotJson,
}

/// Classifies one line of stdout.
pub(crate) fn classify(line: &[u8]) -> Line {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(value @ Value::Object(_)) => Line::Event(value),
        _ => Line::NotJson,
    }
}

/// Whether a line could be the final `result` event, without parsing it: it mentions
/// `"result"`, as every result event does (as its type, and usually as its field).
pub(crate) fn may_be_result(line: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"result\"";
    line.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Whether a line may be a `rate_limit_event`, which is read even past the forwarding limit.
pub(crate) fn may_be_rate_limit(line: &[u8]) -> bool {
    line.windows(16).any(|w| w == b"rate_limit_event")
}

/// Whether an event is the final `{"type":"result",...}`.
pub(crate) fn is_result(event: &Value) -> bool {
    event.get("type").and_then(Value::as_str) == Some("result")
}

/// The first [`SAMPLE_CHARS`] characters of a line, for error messages.
pub(crate) fn sample(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .take(SAMPLE_CHARS)
        .collect()
}

/// Fills the outcome's result fields from the final `result` event and its raw line.
pub(crate) fn fill_from_result(outcome: &mut AgentOutcome, event: Value, line: String) {
    let str_field = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
    outcome.text = str_field("result");
    outcome.session_id = str_field("session_id");
    outcome.subtype = str_field("subtype");
    outcome.is_error = event
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    outcome.cost_usd = event
        .get("total_cost_usd")
        .and_then(Value::as_f64)
        .filter(|cost| cost.is_finite() && *cost >= 0.0)
        .map(|cost| cost.min(MAX_REPORTED_COST_USD));
    outcome.usage = event.get("usage").and_then(usage);
    outcome.structured_output = event
        .get("structured_output")
        .filter(|value| !value.is_null())
        .cloned();
    outcome.result_line = Some(line);
}

/// Most tokens of one kind a run may report; more is bogus and counted as this, so the totals
/// the gateway keeps (metrics, `usage.total_tokens`) cannot wrap.
pub(crate) const MAX_REPORTED_TOKENS: u64 = 1 << 40;

/// Most dollars a run may report; more (or a negative, or not a number) is bogus.
pub(crate) const MAX_REPORTED_COST_USD: f64 = 1e6;

/// Token counts of a `usage` object (of a result event or of a message).
pub(crate) fn usage(value: &Value) -> Option<Usage> {
    let obj = value.as_object()?;
    let count = |key: &str| {
        obj.get(key)
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(MAX_REPORTED_TOKENS)
    };
    Some(Usage {
        input_tokens: count("input_tokens"),
        output_tokens: count("output_tokens"),
        cache_read_input_tokens: count("cache_read_input_tokens"),
        cache_creation_input_tokens: count("cache_creation_input_tokens"),
    })
}

/// What the CLI (2.1.x) prints, then exits 1 with nothing on stdout, for an `--agent` it does not know:
///
/// ```text
/// --agent 'nosuch' not found. Available agents: claude, Explore, general-purpose, Plan, statusline-setup
/// ```
const UNKNOWN_AGENT_MARKER: &str = " not found. Available agents: ";

/// Recognises the CLI's unknown-agent message for `agent` on stderr and returns the list of
/// available agents it printed (`(none)` when there are none), or `None` when stderr says
/// something else.
pub(crate) fn unknown_agent(stderr: &str, agent: &str) -> Option<String> {
    let hard = format!("--agent '{agent}'{UNKNOWN_AGENT_MARKER}");
    // An older wording, printed as a warning before the CLI falls back to its default agent.
    let soft = format!("agent \"{agent}\"{UNKNOWN_AGENT_MARKER}");
    stderr.lines().find_map(|line| {
        let start = line
            .find(&hard)
            .map(|i| i + hard.len())
            .or_else(|| line.find(&soft).map(|i| i + soft.len()))?;
        let list = line[start..].trim_end();
        let list = list
            .strip_suffix(". Using default behavior.")
            .unwrap_or(list);
        Some(list.to_owned())
    })
}

// Byte-capped buffers for the agent's output streams.
//
// Both streams are read concurrently by the run (reading stdout to the end before
// stderr deadlocked any agent that wrote over 64 KiB to stderr). These buffers decide what is kept:
// stdout is split into lines, none of which may be longer than its cap (a longer one is skipped
// to its end); stderr keeps its first bytes and drops the rest while the run keeps draining it.

/// Splits stdout into `\n`-terminated lines, skipping any line longer than `max_line` bytes.
///
/// Only the current unfinished line is buffered, and it is bounded by `max_line`, so however
/// much the agent prints, this holds at most one line.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    /// The bytes after the last newline.
    partial: Vec<u8>,
    /// Longest line kept.
    max_line: usize,
    /// The current line went past `max_line`: the rest of it is dropped.
    skipping: bool,
    /// Lines dropped for being too long.
    skipped: usize,
}

impl LineSplitter {
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_line,
            skipping: false,
            skipped: 0,
        }
    }

    /// Feeds a chunk, calling `on_line` for each complete line (without its `\n` or a trailing
    /// `\r`) that is no longer than the cap.
    pub(crate) fn push(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.skipping || self.partial.len() + head.len() > self.max_line {
                self.end_skipped_line();
                continue;
            }
            if self.partial.is_empty() {
                on_line(trim_cr(head));
            } else {
                self.partial.extend_from_slice(head);
                on_line(trim_cr(&self.partial));
                self.partial.clear();
            }
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + rest.len() > self.max_line {
            self.skipping = true;
            self.partial = Vec::new();
            return;
        }
        self.partial.extend_from_slice(rest);
    }

    fn end_skipped_line(&mut self) {
        self.skipping = false;
        self.skipped += 1;
        self.partial = Vec::new();
    }

    /// How many lines were dropped for being longer than the cap.
    pub(crate) fn skipped(&self) -> usize {
        self.skipped + usize::from(self.skipping)
    }

    /// What followed the last newline when the stream ended: a line cut short, if any (and not
    /// too long to keep).
    pub(crate) fn finish(self) -> Option<Vec<u8>> {
        (!self.skipping && !self.partial.is_empty()).then_some(self.partial)
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]], cap: usize) -> (Vec<String>, Option<Vec<u8>>) {
        let mut splitter = LineSplitter::new(cap);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| {
                lines.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        (lines, splitter.finish())
    }

    #[test]
    fn splits_lines_across_chunks() {
        let (lines, rest) = lines_of(&[b"{\"a\":", b"1}\n{\"b\"", b":2}\r\n\n{\"c"], 1024);
        assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}", ""]);
        assert_eq!(rest.as_deref(), Some(&b"{\"c"[..]));
    }

    #[test]
    fn a_stream_ending_in_newline_leaves_nothing() {
        let (lines, rest) = lines_of(&[b"one\ntwo\n"], 1024);
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(rest, None);
    }

    #[test]
    fn a_line_past_the_cap_is_skipped_and_the_next_one_kept() {
        let mut splitter = LineSplitter::new(1000);
        let mut lines = Vec::new();
        for chunk in [&[b'y'; 600][..], &[b'y'; 600], b"\nnext\n", &[b'z'; 1001]] {
            splitter.push(chunk, |l| {
                lines.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        assert_eq!(lines, ["next"]);
        assert_eq!(splitter.skipped(), 2);
        assert_eq!(splitter.finish(), None);
        let (lines, rest) = lines_of(&[&[b'y'; 1000], b"\n"], 1000);
        assert_eq!(lines, ["y".repeat(1000)]);
        assert_eq!(rest, None);
    }

    #[test]
    fn stderr_keeps_the_first_bytes_up_to_the_cap() {
        let mut text = crate::contain::Capped::new(5);
        text.push(b"abc");
        text.push(b"defgh");
        text.push(b"ij");
        assert_eq!(
            (text.lossy(), text.truncated()),
            ("abcde".to_string(), true)
        );
    }

    #[test]
    fn stderr_under_the_cap_is_not_truncated() {
        let mut text = crate::contain::Capped::new(5);
        text.push(b"abcde");
        assert_eq!(
            (text.lossy(), text.truncated()),
            ("abcde".to_string(), false)
        );
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;
    use serde_json::json;

    const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":2140,"num_turns":1,"result":"Hello.","session_id":"0b2f","total_cost_usd":0.0123,"usage":{"input_tokens":12,"cache_creation_input_tokens":3,"cache_read_input_tokens":40,"output_tokens":7,"server_tool_use":{"web_search_requests":0}}}"#;

    #[test]
    fn classifies_lines() {
        assert_eq!(classify(b""), Line::Blank);
        assert_eq!(classify(b"  \t"), Line::Blank);
        assert_eq!(classify(b"y"), Line::NotJson);
        assert_eq!(classify(b"42"), Line::NotJson);
        assert_eq!(classify(b"{\"type\":\"sys"), Line::NotJson);
        assert_eq!(
            classify(b"{\"type\":\"system\"}"),
            Line::Event(json!({"type":"system"}))
        );
    }

    #[test]
    fn the_result_event_fills_the_outcome() {
        let Line::Event(event) = classify(RESULT.as_bytes()) else {
            panic!("not an event");
        };
        assert!(is_result(&event));
        let mut outcome = AgentOutcome::default();
        fill_from_result(&mut outcome, event, RESULT.to_owned());
        assert_eq!(outcome.text.as_deref(), Some("Hello."));
        assert_eq!(outcome.session_id.as_deref(), Some("0b2f"));
        assert_eq!(outcome.subtype.as_deref(), Some("success"));
        assert!(!outcome.is_error);
        assert_eq!(outcome.cost_usd, Some(0.0123));
        assert_eq!(
            outcome.usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 7,
                cache_read_input_tokens: 40,
                cache_creation_input_tokens: 3,
            })
        );
        assert_eq!(outcome.result_line.as_deref(), Some(RESULT));
        assert_eq!(
            outcome
                .result_line
                .as_deref()
                .and_then(|line| serde_json::from_str::<Value>(line).ok())
                .and_then(|r| r.get("num_turns").cloned())
                .as_ref(),
            Some(&json!(1))
        );
    }

    #[test]
    fn an_error_result_without_text_or_usage_is_still_read() {
        let line = r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true}"#;
        let mut outcome = AgentOutcome::default();
        fill_from_result(
            &mut outcome,
            serde_json::from_str(line).unwrap(),
            line.into(),
        );
        assert!(outcome.is_error);
        assert_eq!(outcome.subtype.as_deref(), Some("error_max_budget_usd"));
        assert_eq!(outcome.text, None);
        assert_eq!(outcome.usage, None);
        assert_eq!(outcome.cost_usd, None);
    }

    #[test]
    fn samples_are_cut_at_200_characters() {
        let long = "é".repeat(300);
        assert_eq!(sample(long.as_bytes()).chars().count(), 200);
    }

    #[test]
    fn recognises_the_cli_unknown_agent_message() {
        let stderr = "--agent 'nosuch' not found. Available agents: claude, Explore, general-purpose, Plan, statusline-setup\n";
        assert_eq!(
            unknown_agent(stderr, "nosuch").as_deref(),
            Some("claude, Explore, general-purpose, Plan, statusline-setup")
        );
        assert_eq!(unknown_agent(stderr, "other"), None);
        assert_eq!(unknown_agent("Error: API unreachable\n", "nosuch"), None);
    }

    #[test]
    fn recognises_the_warning_wording_too() {
        let stderr =
            "Warning: agent \"x\" not found. Available agents: a, b. Using default behavior.\n";
        assert_eq!(unknown_agent(stderr, "x").as_deref(), Some("a, b"));
    }
}
