//! How the client prints: aligned tables (coloured statuses on a terminal, never with
//! `NO_COLOR`), or JSON/YAML for scripts.

use std::io::IsTerminal as _;

use serde_json::Value;

use super::CliError;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// JSON, one document.
    Json,
    /// YAML.
    Yaml,
}

/// Whether colour may be written to stdout: a terminal, and `NO_COLOR` unset or empty.
pub fn colour_on_stdout() -> bool {
    std::io::stdout().is_terminal() && no_color_unset()
}

/// Whether colour may be written to stderr.
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && no_color_unset()
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints `value` as JSON or YAML (for `Table`, the caller renders its own table).
pub fn print_document(format: Format, value: &Value) -> Result<(), CliError> {
    match format {
        Format::Yaml => {
            let text = serde_yaml_ng::to_string(value)
                .map_err(|e| CliError::usage(format!("encoding YAML: {e}")))?;
            print!("{text}");
        }
        Format::Json | Format::Table => {
            let text = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::usage(format!("encoding JSON: {e}")))?;
            println!("{text}");
        }
    }
    Ok(())
}

/// An aligned table: headers in capitals, two spaces between columns, status-like cells
/// coloured when `colour`.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table to a string.
    pub fn render(&self, colour: bool) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String], paint: bool| {
            let last = cells.len().saturating_sub(1);
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = w - cell.chars().count();
                if paint {
                    out.push_str(&paint_status(cell));
                } else {
                    out.push_str(cell);
                }
                if i != last {
                    out.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push('\n');
        };
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        line(&mut out, &headers, false);
        for row in &self.rows {
            line(&mut out, row, colour);
        }
        out
    }

    /// Prints the table, or `empty` when it has no rows.
    pub fn print(&self, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", self.render(colour_on_stdout()));
        }
    }
}

/// A status word in its colour: green for success, red for failure, yellow for waiting.
pub fn paint_status(word: &str) -> String {
    let code = match word {
        "Success" | "SUCCESS" | "TARGET_EXECUTION_REQUESTED" | "Delivered" | "DELIVERED" => "32",
        "Failed"
        | "FAILED"
        | "Errored"
        | "Aborted"
        | "Expired"
        | "ApprovalRejected"
        | "EXCEPTION_WHILE_PROCESSING"
        | "Dead"
        | "DEAD" => "31",
        "Running" | "Queued" | "Paused" | "ApprovalWaiting" | "Pending" | "PENDING" => "33",
        w if w.starts_with("NO_MATCHING") || w == "INVALID_RUNTIME_INPUT_YAML" => "33",
        _ => return word.to_owned(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// A cell from a JSON value: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An epoch-milliseconds cell as UTC time (`2026-12-01 09:14:03`), `-` when absent.
pub fn time_cell(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_do_not_pad_the_last_one() {
        let mut t = Table::new(&["ID", "STATUS"]);
        t.row(vec!["a".into(), "Success".into()]);
        t.row(vec!["longer".into(), "Failed".into()]);
        assert_eq!(
            t.render(false),
            "ID      STATUS\na       Success\nlonger  Failed\n"
        );
        let coloured = t.render(true);
        assert!(coloured.contains("\x1b[32mSuccess\x1b[0m"), "{coloured}");
        assert!(
            coloured.starts_with("ID      STATUS\n"),
            "headers stay plain"
        );
    }

    #[test]
    fn cells_show_absent_values_as_a_dash() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&serde_json::json!("x")), "x");
        assert_eq!(cell(&serde_json::json!(3)), "3");
        assert_eq!(time_cell(&Value::Null), "-");
        assert_eq!(
            time_cell(&serde_json::json!(1_764_580_443_000_i64)),
            "2025-12-01 09:14:03"
        );
    }
}
