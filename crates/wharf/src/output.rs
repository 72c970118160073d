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
    min_widths: Vec<usize>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            min_widths: vec![0; headers.len()],
        }
    }

    /// Keeps `column` at least `width` wide, for cells streamed later.
    pub fn min_width(&mut self, column: usize, width: usize) {
        if let Some(min) = self.min_widths.get_mut(column) {
            *min = width;
        }
    }

    /// Adds a row; missing cells are blank.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    /// The table as text, one line per row, ending in a newline.
    pub fn render(&self) -> String {
        self.render_streaming().0
    }

    /// The table as text, and a [`RowStream`] that prints rows added later
    /// (as a watch reports changes) in the same columns.
    pub fn render_streaming(&self) -> (String, RowStream) {
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let rows = || std::iter::once(&header).chain(&self.rows);
        let mut widths = column_widths(rows(), self.headers.len());
        for (width, min) in widths.iter_mut().zip(&self.min_widths) {
            *width = (*width).max(*min);
        }
        let text = rows().map(|row| render_line(&widths, row)).collect();
        (text, RowStream { widths })
    }
}

/// Prints rows one at a time under a table already printed, aligned to its
/// columns; a wider cell widens its column from then on.
#[derive(Clone, Debug)]
pub struct RowStream {
    widths: Vec<usize>,
}

impl RowStream {
    /// One row as a line ending in a newline.
    pub fn render(&mut self, row: &[String]) -> String {
        for (width, cell) in self.widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
        render_line(&self.widths, row)
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
    let widths = column_widths(rows.clone(), columns);
    rows.into_iter()
        .map(|row| render_line(&widths, row))
        .collect()
}

fn column_widths<'a>(
    rows: impl IntoIterator<Item = &'a Vec<String>>,
    columns: usize,
) -> Vec<usize> {
    let mut widths = vec![0; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

fn render_line(widths: &[usize], row: &[String]) -> String {
    let mut line = String::new();
    for (column, width) in widths.iter().enumerate() {
        let cell = row.get(column).map_or("", String::as_str);
        line.push_str(cell);
        let padding = width.saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', padding + 2));
    }
    // The last column's padding would only be trailing blanks.
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
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

/// How long ago `unix_ms` was, kubectl style: `45s`, `3m`, `2h`, `4d`;
/// `<unknown>` when the time is not known (0).
///
/// ```text
/// age(now_ms, now_ms - 90_000) == "1m"
/// ```
pub fn age(now_ms: u64, unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "<unknown>".to_string();
    }
    // A clock behind the server's reads as "just now", not as a huge age.
    let secs = now_ms.saturating_sub(unix_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Millicores as cores, as `kubectl top` reads: `1.5`, `4`, `0.25`.
pub fn cores(millis: u64) -> String {
    let text = format!("{}.{:03}", millis / 1000, millis % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Memory in Kubernetes' binary units with one decimal: `2.0Gi`,
/// `192.0Mi`; `0` for nothing.
pub fn memory(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

pub use wharf_api::rfc3339;

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
    fn streamed_rows_keep_the_columns_and_widen_them() {
        let mut table = Table::new(&["NAME", "STATUS", "AGE"]);
        table.row(["web-1".into(), "Running".into(), "5s".into()]);
        let (text, mut stream) = table.render_streaming();
        assert_eq!(text, "NAME   STATUS   AGE\nweb-1  Running  5s\n");
        assert_eq!(
            stream.render(&["web-2".into(), "Pending".into(), "0s".into()]),
            "web-2  Pending  0s\n"
        );
        assert_eq!(
            stream.render(&["a-longer-name".into(), "Running".into(), "1s".into()]),
            "a-longer-name  Running  1s\n"
        );
        assert_eq!(
            stream.render(&["web-1".into(), "Running".into(), "9s".into()]),
            "web-1          Running  9s\n",
            "the column stays as wide"
        );
        let mut table = Table::new(&["EVENT", "NAME"]);
        table.min_width(0, "MODIFIED".len());
        table.row(["ADDED".into(), "web-1".into()]);
        let (text, mut stream) = table.render_streaming();
        assert_eq!(text, "EVENT     NAME\nADDED     web-1\n");
        assert_eq!(
            stream.render(&["MODIFIED".into(), "web-1".into()]),
            "MODIFIED  web-1\n"
        );
    }

    #[test]
    fn ages_are_short() {
        let now = 1_000_000_000_000;
        assert_eq!(age(now, now), "0s");
        assert_eq!(age(now, now - 59_999), "59s");
        assert_eq!(age(now, now - 60_000), "1m");
        assert_eq!(age(now, now - 3 * 3_600_000 - 1), "3h");
        assert_eq!(age(now, now - 4 * 86_400_000), "4d");
        assert_eq!(age(now, now + 5_000), "0s", "a clock behind the server");
        assert_eq!(age(now, 0), "<unknown>");
    }

    #[test]
    fn cpu_and_memory_read_like_kubectl() {
        assert_eq!(cores(0), "0");
        assert_eq!(cores(250), "0.25");
        assert_eq!(cores(1500), "1.5");
        assert_eq!(cores(4000), "4");
        assert_eq!(cores(1), "0.001");
        assert_eq!(memory(0), "0");
        assert_eq!(memory(512), "512");
        assert_eq!(memory(2 << 30), "2.0Gi");
        assert_eq!(memory(8 << 30), "8.0Gi");
        assert_eq!(memory(192 << 20), "192.0Mi");
        assert_eq!(memory(1536 << 20), "1.5Gi");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_787_045_999), "2025-01-02T03:04:05Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
    }
}
