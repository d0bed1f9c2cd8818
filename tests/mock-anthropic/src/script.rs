//! Programmatic defaults of a mock: what it says when the prompt carries no directive, which token
//! counts it reports, whether it logs.

/// Token counts reported in every answer's `usage`. Nonzero and distinct so a test can tell which
/// field the gateway mapped where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `usage.input_tokens`.
    pub input_tokens: u64,
    /// `usage.output_tokens` (in a stream: `message_delta.usage.output_tokens`).
    pub output_tokens: u64,
    /// `usage.cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
    /// `usage.cache_creation_input_tokens`.
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    /// What every answer reports unless a script or a `[[mock:usage]]` directive says otherwise.
    /// Claude Code sums these over the turns of a run into its result's `usage`.
    pub const DEFAULT: Self = Self {
        input_tokens: 120,
        output_tokens: 30,
        cache_read_input_tokens: 40,
        cache_creation_input_tokens: 50,
    };
}

impl Default for Usage {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How a mock behaves when the prompt does not say. Built with chained setters:
///
/// ```
/// use mock_anthropic::{Script, Usage};
/// let script = Script::new()
///     .default_reply("always this")
///     .usage(Usage { input_tokens: 1, ..Usage::DEFAULT });
/// assert_eq!(script.reply_override(), Some("always this"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Replaces the echoing default answer; `[[mock:text]]` still wins over it.
    default_reply: Option<String>,
    /// Reported in every answer unless `[[mock:usage]]` overrides input and output counts.
    usage: Usage,
    /// Print one line per request on stderr: for people watching the standalone mock, not for tests.
    log_requests: bool,
}

impl Script {
    /// The default script: echoing answers, [`Usage::DEFAULT`], silent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer `reply` to prompts without a `[[mock:text]]` or `[[mock:bash]]` directive.
    pub fn default_reply(mut self, reply: impl Into<String>) -> Self {
        self.default_reply = Some(reply.into());
        self
    }

    /// Report `usage` in every answer.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Print one line per request on stderr.
    pub fn log_requests(mut self, on: bool) -> Self {
        self.log_requests = on;
        self
    }

    /// The configured default reply, if any.
    pub fn reply_override(&self) -> Option<&str> {
        self.default_reply.as_deref()
    }

    /// The configured usage.
    pub fn usage_counts(&self) -> Usage {
        self.usage
    }

    /// Whether requests are logged on stderr.
    pub fn logs_requests(&self) -> bool {
        self.log_requests
    }
}
