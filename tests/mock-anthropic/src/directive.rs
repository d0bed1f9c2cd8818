//! The `[[mock:NAME ARGS]]` directives a prompt uses to choose the mock's behaviour.
//!
//! Directives live in the prompt text so that tests which only reach the mock through the gateway and
//! the CLI (over HTTP, with no handle on the mock) can still script it.

use std::fmt;
use std::time::Duration;

/// Opens a directive. Unusual enough that ordinary prompts never contain it by accident.
pub const OPEN: &str = "[[mock:";
/// Closes a directive: the first `]]` after [`OPEN`]. Arguments therefore cannot contain `]]`.
pub const CLOSE: &str = "]]";

/// Longest delay honoured, so a typo cannot park a connection for centuries (and overflow a deadline).
const MAX_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What the directives in one prompt ask for. Later directives of the same kind win, except `bash`,
/// which accumulates: each one is a separate tool call, made in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `[[mock:text WORDS]]`: the exact final answer.
    pub text: Option<String>,
    /// `[[mock:bash COMMAND]]`: Bash tool calls to make, one per turn, before answering.
    pub bash: Vec<String>,
    /// `[[mock:delay MS]]`: pause before answering (mid-stream, after the first delta, when streaming).
    pub delay: Option<Duration>,
    /// `[[mock:error STATUS [retry] [model=NAME]]]`: fail with this HTTP status (only requests for a
    /// model whose id contains NAME, when given: how a test overloads one model and not its fallback).
    pub error: Option<ErrorDirective>,
    /// `[[mock:usage INPUT OUTPUT]]`: report these token counts instead of the defaults.
    pub usage: Option<(u64, u64)>,
    /// `[[mock:structured JSON]]` / `[[mock:structured refuse]]`: answer the CLI's
    /// `StructuredOutput` tool (offered under `--json-schema`) with a value, or never call it.
    pub structured: Option<Structured>,
    /// `[[mock:tool NAME JSON]]`: call the first offered tool whose name ends with NAME, with the
    /// JSON as its input; once the conversation holds its result, answer with that result.
    pub tool: Option<ToolDirective>,
    /// `[[mock:ratelimit UNTIL]]`: until the Unix time UNTIL (seconds), answer as an account whose
    /// rate limit is used up: 429 `rate_limit_error` with `anthropic-ratelimit-unified-status:
    /// rejected` and `anthropic-ratelimit-unified-reset: UNTIL`; from UNTIL on, answer as usual.
    /// The real CLI reports this as a failed result (429) with an API key; with a token issued
    /// for the `claude-gateway` audience (`ANTHROPIC_AUTH_TOKEN`) it also reads the headers and
    /// reports a stream-json `rate_limit_event` (`status: rejected`, `resetsAt: UNTIL`).
    pub ratelimit: Option<u64>,
}

/// An `[[mock:tool NAME JSON]]` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDirective {
    /// The end of the tool's name (`get_weather` matches `mcp__caller__get_weather`).
    pub name: String,
    /// The tool's input.
    pub input: serde_json::Value,
}

/// How a gateway that renders a whole conversation as one prompt writes a function's result
/// there: a line `[Function result NAME CALL_ID]`, then the result, then a blank line before the
/// next `[` section (or the end). What the `tool` directive reads as "the result is back".
pub const RESULT_MARKER: &str = "[Function result ";

/// The result of the function whose name ends with `name`, as a prompt renders it (see
/// [`RESULT_MARKER`]); the last one when there are several.
pub fn rendered_result<'a>(prompt: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    let mut rest = prompt;
    while let Some(start) = rest.find(RESULT_MARKER) {
        let after = &rest[start + RESULT_MARKER.len()..];
        let (header, body) = after.split_once('\n').unwrap_or((after, ""));
        let called = header.split_whitespace().next().unwrap_or("");
        let end = body
            .find("\n\n[")
            .or_else(|| body.find("\n\n---"))
            .unwrap_or(body.len());
        if called.ends_with(name) {
            found = Some(body[..end].trim());
        }
        rest = after;
    }
    found
}

/// An `[[mock:structured ...]]` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Structured {
    /// Call `StructuredOutput` with this JSON value (after any `bash` calls), then answer text.
    Call(serde_json::Value),
    /// Answer prose and never call the tool, as a model that cannot fit the schema would.
    Refuse,
}

/// An `[[mock:error ...]]` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDirective {
    /// HTTP status to answer, 400..=599.
    pub status: u16,
    /// Whether the CLI may retry. Without `retry` the mock sends `x-should-retry: false`, which makes
    /// the CLI give up after one attempt instead of backing off for minutes.
    pub retry: bool,
    /// `model=NAME`: fail only requests whose model id contains NAME; `None`: every request.
    pub model: Option<String>,
}

impl ErrorDirective {
    /// Whether a request for `model` gets the error.
    pub fn applies_to(&self, model: &str) -> bool {
        self.model
            .as_deref()
            .is_none_or(|name| model.contains(name))
    }
}

/// A directive the mock does not understand; answered with a 400 that names the problem, so a typo
/// in a test shows up in the CLI's error result instead of silently changing behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError(pub String);

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mock-anthropic: {}", self.0)
    }
}

impl std::error::Error for DirectiveError {}

impl Directives {
    /// Parses every directive in `text`.
    pub fn parse(text: &str) -> Result<Self, DirectiveError> {
        let mut directives = Self::default();
        for inner in spans(text).map(|span| span.map(|(_, inner)| inner)) {
            directives.apply(inner?)?;
        }
        Ok(directives)
    }

    /// Whether no directive was given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn apply(&mut self, inner: &str) -> Result<(), DirectiveError> {
        let inner = inner.trim();
        let (name, args) = inner
            .split_once(char::is_whitespace)
            .map_or((inner, ""), |(name, args)| (name, args.trim()));
        match name {
            "text" => self.text = Some(args.to_owned()),
            "bash" if args.is_empty() => {
                return Err(DirectiveError("`[[mock:bash]]` needs a command".into()))
            }
            "bash" => self.bash.push(args.to_owned()),
            "delay" => {
                let ms: u64 = args.parse().map_err(|_| {
                    DirectiveError(format!("`[[mock:delay {args}]]`: expected milliseconds"))
                })?;
                self.delay = Some(Duration::from_millis(ms).min(MAX_DELAY));
            }
            "error" => self.error = Some(parse_error(args)?),
            "usage" => self.usage = Some(parse_usage(args)?),
            "ratelimit" => {
                let until: u64 = args.parse().map_err(|_| {
                    DirectiveError(format!(
                        "`[[mock:ratelimit {args}]]`: expected the Unix time (seconds) the limit resets at"
                    ))
                })?;
                self.ratelimit = Some(until);
            }
            "tool" => self.tool = Some(parse_tool(args)?),
            "structured" if args == "refuse" => self.structured = Some(Structured::Refuse),
            "structured" => {
                let value = serde_json::from_str(args).map_err(|e| {
                    DirectiveError(format!(
                        "`[[mock:structured {args}]]`: expected JSON or `refuse`: {e}"
                    ))
                })?;
                self.structured = Some(Structured::Call(value));
            }
            other => {
                return Err(DirectiveError(format!(
                    "unknown directive `[[mock:{other}]]` (known: text, bash, delay, error, usage, structured, tool, ratelimit)"
                )))
            }
        }
        Ok(())
    }
}

/// `text` with every directive removed and surrounding whitespace trimmed: what the default answer
/// echoes.
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        match rest[start..].find(CLOSE) {
            Some(end) => rest = &rest[start + end + CLOSE.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// Each directive's full span and its inner text (between `[[mock:` and `]]`), in order.
fn spans(text: &str) -> impl Iterator<Item = Result<(usize, &str), DirectiveError>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let start = offset + text.get(offset..)?.find(OPEN)?;
        let body_start = start + OPEN.len();
        match text[body_start..].find(CLOSE) {
            Some(len) => {
                offset = body_start + len + CLOSE.len();
                Some(Ok((start, &text[body_start..body_start + len])))
            }
            None => {
                offset = text.len();
                Some(Err(DirectiveError(format!(
                    "unterminated directive: `{OPEN}` without `{CLOSE}`"
                ))))
            }
        }
    })
}

fn parse_tool(args: &str) -> Result<ToolDirective, DirectiveError> {
    let bad = |why: String| DirectiveError(format!("`[[mock:tool {args}]]`: {why}"));
    let (name, input) = args
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected a tool name and its JSON input".into()))?;
    let input: serde_json::Value = serde_json::from_str(input.trim())
        .map_err(|e| bad(format!("the input is not JSON: {e}")))?;
    if !input.is_object() {
        return Err(bad("the input must be a JSON object".into()));
    }
    Ok(ToolDirective {
        name: name.to_owned(),
        input,
    })
}

fn parse_error(args: &str) -> Result<ErrorDirective, DirectiveError> {
    let bad = || {
        DirectiveError(format!(
            "`[[mock:error {args}]]`: expected a status 400..=599, optionally followed by `retry` \
             and `model=NAME`"
        ))
    };
    let mut words = args.split_whitespace();
    let status: u16 = words.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    if !(400..=599).contains(&status) {
        return Err(bad());
    }
    let mut directive = ErrorDirective {
        status,
        retry: false,
        model: None,
    };
    for word in words {
        match word.strip_prefix("model=") {
            None if word == "retry" && !directive.retry => directive.retry = true,
            Some(name) if !name.is_empty() && directive.model.is_none() => {
                directive.model = Some(name.to_owned())
            }
            _ => return Err(bad()),
        }
    }
    Ok(directive)
}

fn parse_usage(args: &str) -> Result<(u64, u64), DirectiveError> {
    let bad = || {
        DirectiveError(format!(
            "`[[mock:usage {args}]]`: expected two token counts, input then output"
        ))
    };
    let mut words = args.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next(), words.next()) {
        (Some(Ok(input)), Some(Ok(output)), None) => Ok((input, output)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_directives() {
        assert!(Directives::parse("say hi [[not a directive]]")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn every_kind_is_parsed_and_bash_accumulates() {
        let d = Directives::parse(
            "x [[mock:bash echo a > f]] [[mock:bash cat f]] [[mock:text  done now ]] \
             [[mock:delay 250]] [[mock:error 529 retry]] [[mock:usage 10 20]]",
        )
        .unwrap();
        assert_eq!(d.bash, ["echo a > f", "cat f"]);
        assert_eq!(d.text.as_deref(), Some("done now"));
        assert_eq!(d.delay, Some(Duration::from_millis(250)));
        assert_eq!(
            d.error,
            Some(ErrorDirective {
                status: 529,
                retry: true,
                model: None,
            })
        );
        assert_eq!(d.usage, Some((10, 20)));
    }

    #[test]
    fn an_error_can_be_limited_to_one_model() {
        let error = Directives::parse("[[mock:error 529 retry model=sonnet]]")
            .unwrap()
            .error
            .unwrap();
        assert!(error.applies_to("claude-sonnet-4-5-20250929"));
        assert!(!error.applies_to("claude-haiku-4-5-20251001"));
        assert!(Directives::parse("[[mock:error 529 model=]]").is_err());
        assert!(Directives::parse("[[mock:error 529 retry retry]]").is_err());
    }

    #[test]
    fn structured_takes_json_or_refuse() {
        let d = Directives::parse(r#"[[mock:structured {"n": 1}]]"#).unwrap();
        assert_eq!(
            d.structured,
            Some(Structured::Call(serde_json::json!({"n": 1})))
        );
        let d = Directives::parse("[[mock:structured refuse]]").unwrap();
        assert_eq!(d.structured, Some(Structured::Refuse));
        assert!(Directives::parse("[[mock:structured {oops]]").is_err());
    }

    #[test]
    fn tool_takes_a_name_and_a_json_object() {
        let d = Directives::parse(r#"[[mock:tool get_weather {"city": "Paris"}]]"#).unwrap();
        assert_eq!(
            d.tool,
            Some(ToolDirective {
                name: "get_weather".into(),
                input: serde_json::json!({"city": "Paris"})
            })
        );
        for bad in [
            "[[mock:tool get_weather]]",
            "[[mock:tool get_weather {oops]]",
            "[[mock:tool get_weather [1]]]",
        ] {
            assert!(Directives::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn rendered_results_are_found_by_name_suffix() {
        let prompt = "[User]\nweather? [[mock:tool get_weather {}]]\n\n[Function result get_weather call_1]\n21C and sunny\nno wind\n\n[Assistant]\nok\n\n---\n\nRequest:\ngo on";
        assert_eq!(
            rendered_result(prompt, "get_weather"),
            Some("21C and sunny\nno wind")
        );
        assert_eq!(
            rendered_result("[Function result x_get_weather c]\nrain", "get_weather"),
            Some("rain")
        );
        assert_eq!(rendered_result(prompt, "get_time"), None);
        assert_eq!(rendered_result("no results here", "get_weather"), None);
    }

    #[test]
    fn later_directive_of_a_kind_wins() {
        let d = Directives::parse("[[mock:text one]][[mock:text two]]").unwrap();
        assert_eq!(d.text.as_deref(), Some("two"));
    }

    #[test]
    fn mistakes_are_reported_not_ignored() {
        for bad in [
            "[[mock:nosuch]]",
            "[[mock:delay soon]]",
            "[[mock:error 200]]",
            "[[mock:error 500 maybe]]",
            "[[mock:usage 1]]",
            "[[mock:bash ]]",
            "[[mock:text unterminated",
        ] {
            assert!(Directives::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn huge_delays_are_capped() {
        let d = Directives::parse(&format!("[[mock:delay {}]]", u64::MAX)).unwrap();
        assert_eq!(d.delay, Some(MAX_DELAY));
    }

    #[test]
    fn strip_removes_directives_and_trims() {
        assert_eq!(
            strip("  [[mock:delay 5]] hello [[mock:text x]] world "),
            "hello  world"
        );
        assert_eq!(strip("a [[mock:oops"), "a");
    }
}
