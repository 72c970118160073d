//! What client commands print: aligned tables for people, JSON or YAML for
//! scripts, with sizes and times made readable.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How a command prints what the server answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's JSON as YAML.
    Yaml,
}

/// The `-o` option of commands that print data.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct OutputOption {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// Prints `answer`, the server's JSON: as is for JSON and YAML, or as the
/// text `table` makes of it, read as `T`.
///
/// Scripts get exactly what the server sent, including fields this client
/// does not know yet.
pub fn print<T: DeserializeOwned>(
    format: OutputFormat,
    answer: Value,
    table: impl FnOnce(T) -> String,
) -> Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        OutputFormat::Yaml => print!("{}", serde_norway::to_string(&answer)?),
        OutputFormat::Table => {
            let typed = serde_json::from_value(answer)
                .context("the server's answer is not what wharf expects; try -o json")?;
            print!("{}", table(typed));
        }
    }
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell.
///
/// ```text
/// NAME   ADMIN  CREATED
/// admin  yes    2025-01-02T03:04:05Z
/// ```
#[derive(Clone, Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    /// The table as text, one line per row, ending in a newline.
    pub fn render(&self) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        render_rows(
            std::iter::once(&header).chain(&self.rows),
            self.headers.len(),
        )
    }
}

/// One object as `field: value` lines with the values aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|(name, value)| vec![format!("{name}:"), value.clone()])
        .collect();
    render_rows(&rows, 2)
}

fn render_rows<'a>(
    rows: impl IntoIterator<Item = &'a Vec<String>> + Clone,
    columns: usize,
) -> String {
    let mut widths = vec![0; columns];
    for row in rows.clone() {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, width) in widths.iter().enumerate() {
            let cell = row.get(column).map_or("", String::as_str);
            line.push_str(cell);
            let padding = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', padding + 2));
        }
        // The last column's padding would only be trailing blanks.
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `1.5 GiB`, `512 B`: binary units, at most one decimal.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// Unix milliseconds as RFC 3339 in UTC, to the second: `2025-01-02T03:04:05Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, time) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// The calendar date `days` after 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `yes` or `no`, for table cells.
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_blanks() {
        let mut table = Table::new(&["NAME", "ADMIN", "CREATED"]);
        table.row(["admin".into(), "yes".into(), "2025-01-02".into()]);
        table.row(["a-much-longer-name".into(), "no".into()]);
        assert_eq!(
            table.render(),
            "NAME                ADMIN  CREATED\n\
             admin               yes    2025-01-02\n\
             a-much-longer-name  no\n"
        );
        assert_eq!(Table::new(&["NAME", "ROLE"]).render(), "NAME  ROLE\n");
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(
            render_fields(&[("name", "p".into()), ("public", "no".into())]),
            "name:    p\npublic:  no\n"
        );
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1536 << 20), "1.5 GiB");
        assert_eq!(human_size(10 << 30), "10 GiB");
        assert_eq!(human_size(u64::MAX), "16 EiB");
    }

    #[test]
    fn sizes_read_back_with_units() {
        // What people type for --quota prints back the same way.
        for text in ["512MiB", "10GiB", "3TiB"] {
            let bytes = crate::units::parse_size(text).unwrap();
            assert_eq!(human_size(bytes).replace(' ', ""), text);
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_787_045_999), "2025-01-02T03:04:05Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
    }
}
