//! Progress on stderr, drawn only when stderr is a terminal: pipes, logs
//! and scripts see nothing of it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target(show: bool) -> ProgressDrawTarget {
    if show && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A spinner with a message and the time spent, for a wait of unknown
/// length (a deploy pulling its image, a task being waited for).
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target(true));
    if let Ok(s) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(s);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A byte counter for transfers large enough to wait for.
pub fn bytes(len: Option<u64>, what: &'static str) -> ProgressBar {
    const WORTH_SHOWING: u64 = 8 * 1024 * 1024;
    let show = len.is_none_or(|n| n >= WORTH_SHOWING);
    let bar = ProgressBar::with_draw_target(len, target(show));
    let style = match len {
        Some(_) => "{bytes}/{total_bytes} {msg} [{bar:30}] {bytes_per_sec}, {eta} left",
        None => "{bytes} {msg} {bytes_per_sec}",
    };
    if let Ok(s) = ProgressStyle::with_template(style) {
        bar.set_style(s.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}
