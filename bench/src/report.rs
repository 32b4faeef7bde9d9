//! What a run produced: named figures, the human table, the `--json` file,
//! and the Markdown comparison `bench/run` puts in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    pub fn add(&mut self, name: &str, value: f64, unit: &str) {
        self.0.push(Figure { name: name.into(), value, unit: unit.into() });
    }
}

/// A scenario's figures, whether it went as it should (everything
/// connected, nothing lost or duplicated), and what went wrong.
pub struct Outcome {
    pub figures: Figures,
    pub errors: Vec<String>,
    pub ok: bool,
}

/// One run of one scenario against one target: the `--json` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    pub target: String,
    pub server: String,
    /// The exact command line.
    pub command: String,
    pub started_unix: u64,
    /// /proc/loadavg (1, 5, 15 minutes) before and after.
    pub load_before: String,
    pub load_after: String,
    pub ok: bool,
    pub errors: Vec<String>,
    pub figures: Figures,
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.abs() >= 1000.0 || v == v.trunc() {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl RunResult {
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} against {} — {}", self.scenario, self.target, if self.ok { "ok" } else { "NOT OK" });
        let _ = writeln!(s, "server: {}", self.server);
        let _ = writeln!(s, "load before/after: {} / {}", self.load_before, self.load_after);
        let width = self.figures.0.iter().map(|f| f.name.chars().count()).max().unwrap_or(0);
        for f in &self.figures.0 {
            let _ = writeln!(s, "  {:<width$}  {:>14} {}", f.name, number(f.value), f.unit);
        }
        for e in &self.errors {
            let _ = writeln!(s, "  ! {e}");
        }
        s
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Result files written with --json.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

const TARGETS: [&str; 3] = ["standalone", "distributed", "centrifugo"];

/// Markdown: per scenario, each figure for Confab standalone, Confab
/// distributed and the peer, with Confab ÷ peer; then the commands.
pub fn markdown(args: &ReportArgs) -> Result<String> {
    let mut runs = Vec::new();
    for f in &args.files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let r: RunResult =
            serde_json::from_str(&text).with_context(|| format!("{} is not a result file", f.display()))?;
        runs.push(r);
    }
    let mut by_scenario: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    for r in &runs {
        by_scenario.entry(r.scenario.as_str()).or_default().push(r);
    }
    let mut s = String::new();
    for scenario in ["idle", "fanout", "dm"] {
        let Some(rs) = by_scenario.get(scenario) else { continue };
        let get = |t: &str| rs.iter().find(|r| r.target == t);
        let _ = writeln!(s, "### {scenario}\n");
        let _ = writeln!(
            s,
            "| figure | Confab standalone | Confab distributed | Centrifugo peer | standalone ÷ peer | distributed ÷ peer |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        let first = TARGETS.iter().find_map(|t| get(t)).expect("at least one run");
        for (i, fig) in first.figures.0.iter().enumerate() {
            let value = |t: &str| {
                get(t)
                    .and_then(|r| {
                        r.figures
                            .0
                            .get(i)
                            .filter(|f| f.name == fig.name)
                            .or_else(|| r.figures.0.iter().find(|f| f.name == fig.name))
                    })
                    .map(|f| f.value)
            };
            let cell = |t: &str| value(t).map_or("not run".into(), number);
            let ratio = |t: &str| match (value(t), value("centrifugo")) {
                (Some(a), Some(b)) if b != 0.0 && !a.is_nan() && !b.is_nan() => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            let unit = if fig.unit.is_empty() { String::new() } else { format!(" ({})", fig.unit) };
            let _ = writeln!(
                s,
                "| {}{unit} | {} | {} | {} | {} | {} |",
                fig.name,
                cell("standalone"),
                cell("distributed"),
                cell("centrifugo"),
                ratio("standalone"),
                ratio("distributed")
            );
        }
        let _ = writeln!(s);
        for t in TARGETS {
            if let Some(r) = get(t) {
                let _ = writeln!(
                    s,
                    "- {t}: {}; load {} → {}",
                    if r.ok { "ok" } else { "**NOT OK**" },
                    r.load_before,
                    r.load_after
                );
                let _ = writeln!(s, "  `{}`", r.command);
                let _ = writeln!(s, "  server: {}", r.server);
                for e in &r.errors {
                    let _ = writeln!(s, "  - {e}");
                }
            }
        }
        let _ = writeln!(s);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(-1234.4), "-1,234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(f64::NAN), "–");
    }
}
