//! Progress bars on standard error for long commands (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar that follows a multi-phase task: each new phase name starts a fresh bar.
#[derive(Debug, Default)]
pub struct Bar {
    bar: Option<ProgressBar>,
    phase: &'static str,
}

impl Bar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, phase: &'static str, done: u64, total: u64) {
        if self.phase != phase || self.bar.is_none() {
            if let Some(b) = self.bar.take() {
                b.finish_and_clear();
            }
            let bar = ProgressBar::new(total);
            let template = if phase == "segments" {
                "{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
            } else {
                "{msg:>10} [{bar:40}] {pos}/{len} ({eta})"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(phase);
            self.bar = Some(bar);
            self.phase = phase;
        }
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
