//! Progress on stderr while a scenario runs (indicatif hides it when stderr is not a
//! terminal, so `--json` output and logs stay clean).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps, labelled `what`.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{msg:<40} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(what.to_string())
}

/// A spinner for a phase without a count.
pub(crate) fn phase(what: &str) -> ProgressBar {
    let p = ProgressBar::new_spinner().with_message(what.to_string());
    p.enable_steady_tick(std::time::Duration::from_millis(120));
    p
}
