//! `mailtls scan FILE`: many checks with bounded concurrency.
//!
//! The input is one domain or address per line (blank lines and `#`
//! comments skipped; `-` reads standard input). Each line is limited to
//! [`MAX_LINE_BYTES`]; a longer one is reported as invalid, not read whole.
//! Results are written as they complete, as JSON lines (the objects of
//! `check --json`) or CSV, with a progress bar on a terminal.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailtls_core::{AddressError, CheckReport, Problem};

use crate::config::{CheckFlags, FileConfig};
use crate::output;

/// Longest line read from a scan file; longer lines are reported invalid.
pub const MAX_LINE_BYTES: usize = 1024;
/// `--concurrency` default (issue #2).
const DEFAULT_CONCURRENCY: u64 = 64;
/// `--concurrency` ceiling: each check may open up to 40 connections.
const MAX_CONCURRENCY: u64 = 4096;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// `mailtls scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// File with one domain or address per line (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Checks run at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u64).range(1..=MAX_CONCURRENCY))]
    concurrency: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    flags: CheckFlags,
}

/// One input line: the text, or why it could not be read.
enum Line {
    Text(String),
    TooLong(String),
}

fn read_lines(reader: impl Read) -> std::io::Result<Vec<Line>> {
    let mut reader = BufReader::new(reader);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            // Skip the rest of the overlong line without holding it.
            let head = String::from_utf8_lossy(&buf[..32]).into_owned();
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = reader
                    .by_ref()
                    .take(64 * 1024)
                    .read_until(b'\n', &mut rest)?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            lines.push(Line::TooLong(head));
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if !text.is_empty() && !text.starts_with('#') {
            lines.push(Line::Text(text.to_owned()));
        }
    }
}

/// Runs the scan.
pub async fn run(file: &FileConfig, args: ScanArgs) -> ExitCode {
    let checker = match crate::checker(file, &args.flags) {
        Ok(checker) => checker,
        Err(code) => return code,
    };
    let lines = if args.file.as_os_str() == "-" {
        read_lines(std::io::stdin().lock())
    } else {
        File::open(&args.file).and_then(read_lines)
    };
    let lines = match lines {
        Ok(lines) => lines,
        Err(e) => return crate::usage_error(&format!("cannot read {}: {e}", args.file.display())),
    };
    let out: Box<dyn Write> = match &args.output {
        Some(path) => match File::create(path) {
            Ok(f) => Box::new(BufWriter::new(f)),
            Err(e) => return crate::usage_error(&format!("cannot create {}: {e}", path.display())),
        },
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut sink = Sink::new(out, args.format);

    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(lines.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} checked  {per_sec}  eta {eta}")
    {
        progress.set_style(style);
    }

    let concurrency = usize::try_from(args.concurrency).unwrap_or(64);
    // Each check is a task of its own, so that it runs on the runtime's
    // worker threads, which also drive the I/O: polled here, on the thread
    // of `block_on`, every socket event of every check would cost a wake-up
    // of this thread by a worker (measured: ~30 context switches and
    // ~0.3 ms of CPU per check). This thread only writes the reports.
    let mut results = futures_util::stream::iter(lines)
        .map(|line| {
            let checker = checker.clone();
            tokio::spawn(async move {
                match line {
                    Line::Text(text) => checker.check_input(&text, true).await,
                    Line::TooLong(head) => CheckReport::invalid(
                        &format!("{head}…"),
                        &AddressError::TooLong,
                        SystemTime::now(),
                    ),
                }
            })
        })
        .buffer_unordered(concurrency);

    let mut invalid = false;
    while let Some(joined) = results.next().await {
        // A check that panicked panics the scan, as it did when it ran here.
        let report = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        invalid |= report.problem == Some(Problem::InvalidAddress);
        progress.inc(1);
        if let Err(e) = sink.write(&report) {
            progress.abandon();
            return crate::usage_error(&format!("cannot write the output: {e}"));
        }
    }
    progress.finish_and_clear();
    if let Err(e) = sink.finish() {
        return crate::usage_error(&format!("cannot write the output: {e}"));
    }
    if invalid {
        ExitCode::from(crate::EXIT_INVALID_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

/// Where reports go, in the chosen format.
enum Sink {
    Jsonl(Box<dyn Write>),
    Csv(Box<csv::Writer<Box<dyn Write>>>, bool),
}

impl Sink {
    fn new(out: Box<dyn Write>, format: Format) -> Sink {
        match format {
            Format::Jsonl => Sink::Jsonl(out),
            Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out)), false),
        }
    }

    fn write(&mut self, report: &CheckReport) -> std::io::Result<()> {
        match self {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, report).map_err(std::io::Error::other)?;
                out.write_all(b"\n")
            }
            Sink::Csv(writer, header_written) => {
                if !*header_written {
                    writer
                        .write_record(output::CSV_HEADER)
                        .map_err(std::io::Error::other)?;
                    *header_written = true;
                }
                writer
                    .write_record(output::csv_row(report))
                    .map_err(std::io::Error::other)
            }
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Jsonl(mut out) => out.flush(),
            Sink::Csv(mut writer, header_written) => {
                if !header_written {
                    writer
                        .write_record(output::CSV_HEADER)
                        .map_err(std::io::Error::other)?;
                }
                writer.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_skip_comments_and_blanks_and_bound_length() {
        let long = "x".repeat(5000);
        let input = format!("example.org\n\n# comment\n  b@example.net  \n{long}\nlast.example");
        let lines = read_lines(input.as_bytes()).expect("reads");
        let kinds: Vec<String> = lines
            .iter()
            .map(|l| match l {
                Line::Text(t) => t.clone(),
                Line::TooLong(_) => "<too long>".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["example.org", "b@example.net", "<too long>", "last.example"]
        );
    }
}
