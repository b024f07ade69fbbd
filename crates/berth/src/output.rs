//! How commands print: aligned tables and `key: value` views for people
//! (the default), the contract's own JSON or YAML for scripts (`-o json`,
//! `-o yaml`).

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned tables and `key: value` views.
    #[default]
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The same data as YAML.
    Yaml,
}

impl Format {
    /// Prints `value` as JSON or YAML, or what `human` makes of it.
    pub fn print<T: Serialize>(self, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
        let text = match self {
            Format::Table => human(value),
            Format::Json => serde_json::to_string_pretty(value)?,
            Format::Yaml => serde_norway::to_string(value)?,
        };
        println!("{}", text.trim_end_matches('\n'));
        Ok(())
    }
}

/// Columns aligned on the widest cell, separated by three spaces, under
/// an upper-case header: the look of `kubectl get` and `docker ps`.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().take(cols).enumerate() {
                let cell = one_line(cell);
                line.push_str(&cell);
                if i + 1 < cols {
                    let pad = widths[i] - width(&cell) + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned; a value of several lines
/// goes on, indented, under its key.
#[derive(Default)]
pub struct Detail {
    rows: Vec<(String, String)>,
}

impl Detail {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.rows.push((key.to_owned(), value.into()));
        self
    }

    /// Adds the row only when there is a value.
    pub fn opt(&mut self, key: &str, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(v) = value {
            self.add(key, v);
        }
        self
    }

    pub fn render(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|(k, _)| width(k) + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.rows {
            let mut lines = v.lines();
            let first = lines.next().unwrap_or("");
            let key = format!("{k}:");
            out.push_str(format!("{key:<w$}  {first}").trim_end());
            out.push('\n');
            for more in lines {
                out.push_str(&format!("{:w$}  {more}\n", ""));
            }
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// A table cell stays on its line.
fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r', '\t']) {
        s.replace(['\n', '\r', '\t'], " ")
    } else {
        s.to_owned()
    }
}

/// How long ago an RFC 3339 time was, as `kubectl get` shows age: `45s`,
/// `12m`, `3h`, `5d`.
pub fn age(rfc3339: &str) -> String {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return rfc3339.to_owned();
    };
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 7200 {
        format!("{}m", secs / 60)
    } else if secs < 172_800 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    }
}

/// A word for an absent value in a table.
pub const NONE: &str = "-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_without_trailing_space() {
        let mut t = Table::new(&["NAME", "VERSION", "IMAGE"]);
        t.row(vec!["shout".into(), "12".into(), "busybox".into()]);
        t.row(vec!["a".into(), "1".into(), "multi\nline".into()]);
        assert_eq!(
            t.render(),
            "NAME    VERSION   IMAGE\n\
             shout   12        busybox\n\
             a       1         multi line\n"
        );
        assert_eq!(Table::new(&["ID", "STATUS"]).render(), "ID   STATUS\n");
    }

    #[test]
    fn details_align_their_values() {
        let mut d = Detail::new();
        d.add("name", "shout")
            .add("memory", "32MiB")
            .add("env", "A=1\nB=2");
        d.opt("error", None::<String>);
        assert_eq!(
            d.render(),
            "name:    shout\nmemory:  32MiB\nenv:     A=1\n         B=2\n"
        );
    }

    #[test]
    fn ages() {
        let now = time::OffsetDateTime::now_utc() - time::Duration::seconds(3 * 3600 + 5);
        let s = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(age(&s), "3h");
        assert_eq!(age("not a time"), "not a time");
    }
}
