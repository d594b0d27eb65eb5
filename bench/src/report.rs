//! Figures as they are measured: samples with the load average before each, and the
//! table they end up in.

use std::fmt::Write as _;

/// The one-minute load average now: printed with every sample, so a noisy machine shows.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Repeated measurements of one figure.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
    loads: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, value: f64, load: f64) {
        self.values.push(value);
        self.loads.push(load);
    }

    /// The same samples less `amount` each.
    pub fn less(&self, amount: f64) -> Self {
        Self {
            values: self.values.iter().map(|v| v - amount).collect(),
            loads: self.loads.clone(),
        }
    }

    pub fn one(value: f64, load: f64) -> Self {
        let mut samples = Self::default();
        samples.push(value, load);
        samples
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn median(&self) -> f64 {
        median(&self.values)
    }

    pub fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::NAN, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.values.iter().copied().fold(f64::NAN, f64::max)
    }

    fn loads(&self) -> String {
        let low = self.loads.iter().copied().fold(f64::NAN, f64::min);
        let high = self.loads.iter().copied().fold(f64::NAN, f64::max);
        if (high - low).abs() < 0.005 {
            format!("{low:.2}")
        } else {
            format!("{low:.2}–{high:.2}")
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Row {
    label: String,
    samples: Samples,
    unit: &'static str,
    note: String,
}

struct Section {
    title: String,
    rows: Vec<Row>,
}

/// Every figure of a run, grouped in sections, printed as Markdown tables.
#[derive(Default)]
pub struct Report {
    sections: Vec<Section>,
}

impl Report {
    /// Starts a section; rows go into the latest one.
    pub fn section(&mut self, title: impl Into<String>) {
        let title = title.into();
        println!("\n== {title}");
        self.sections.push(Section {
            title,
            rows: Vec::new(),
        });
    }

    /// Records a figure and prints it at once, so a long run shows its progress.
    pub fn row(
        &mut self,
        label: impl Into<String>,
        samples: &Samples,
        unit: &'static str,
        note: impl Into<String>,
    ) {
        let row = Row {
            label: label.into(),
            samples: samples.clone(),
            unit,
            note: note.into(),
        };
        println!("{}", format_row(&row));
        if self.sections.is_empty() {
            self.section("Results");
        }
        if let Some(section) = self.sections.last_mut() {
            section.rows.push(row);
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            let _ = writeln!(out, "\n### {}\n", section.title);
            let _ = writeln!(
                out,
                "| measure | median | min | max | unit | runs | load avg | note |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---|---|");
            for row in &section.rows {
                let _ = writeln!(out, "{}", format_row(row));
            }
        }
        out
    }
}

fn format_row(row: &Row) -> String {
    let s = &row.samples;
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        row.label,
        number(s.median()),
        number(s.min()),
        number(s.max()),
        row.unit,
        s.values.len(),
        s.loads(),
        row.note
    )
}

/// Three significant figures, whatever the magnitude.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        return "–".into();
    }
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
