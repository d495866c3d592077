//! Errors as a person reads them: an error and its causes on one line, for logs and for the
//! reasons the agent reports to the controller.

/// An error and its causes, as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
