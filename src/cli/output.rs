use serde::Serialize;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

impl Output {
    /// Print `report` as one JSON object, or as the table `render` makes.
    pub fn print<T: Serialize>(self, report: &T, render: impl FnOnce(&T) -> String) -> Result<()> {
        let text = match self {
            Output::Json => serde_json::to_string_pretty(report)
                .map_err(|e| Error::io("encoding JSON", std::io::Error::other(e)))?,
            Output::Table => render(report),
        };
        println!("{}", text.trim_end());
        Ok(())
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
